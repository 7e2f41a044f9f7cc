"""How much faster a cached dataset index opens (patchwork.data.index_cache).

Builds an ImageNet-VID-layout folder (``--snippets`` train snippets of ``--frames`` tiny JPEG
frames with one-object XMLs and per-class ImageSets lists) in a temporary folder, then opens it
with :class:`patchwork.data.ImageNetVID` ``--repeats`` times interleaved: without the cache
(a full build), then building the cache, then from the cache. Prints the median times and the
ratio of a full build to a cached open (target: >= 10x).

    PYTHONPATH=$PWD python scripts/benchmark_index.py [--snippets 2000] [--frames 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torchvision.io import encode_jpeg

from patchwork.data import ImageNetVID
from patchwork.data.index_cache import INDEX_DIR

WNIDS = ("n02084071", "n02121808", "n02391049")  # dog, domestic_cat, zebra


def vid_xml(wnid: str, frame: int) -> str:
    return (f"<annotation><size><width>16</width><height>16</height></size><object><trackid>0</trackid>"
            f"<name>{wnid}</name><bndbox><xmax>{8 + frame % 4}</xmax><xmin>2</xmin><ymax>12</ymax><ymin>3</ymin>"
            f"</bndbox><occluded>{frame % 2}</occluded><generated>0</generated></object></annotation>")


def make_fixture(root: Path, snippets: int, frames: int) -> Path:
    """``root/ILSVRC2015`` with ``snippets`` train snippets of ``frames`` 16x16 JPEGs and XMLs."""
    vid = root / "ILSVRC2015"
    jpeg = encode_jpeg(torch.full((3, 16, 16), 128, dtype=torch.uint8)).numpy().tobytes()
    lists: dict[int, list[str]] = {}
    for s in range(snippets):
        name = f"ILSVRC2015_VID_train_{s // 1000:04d}/ILSVRC2015_train_{s:08d}"
        data, annotations = vid / "Data" / "VID" / "train" / name, vid / "Annotations" / "VID" / "train" / name
        data.mkdir(parents=True)
        annotations.mkdir(parents=True)
        for t in range(frames):
            (data / f"{t:06d}.JPEG").write_bytes(jpeg)
            (annotations / f"{t:06d}.xml").write_text(vid_xml(WNIDS[s % 3], t))
        lists.setdefault(s % 3, []).append(f"{name} 1")
    sets = vid / "ImageSets" / "VID"
    sets.mkdir(parents=True)
    for c, lines in lists.items():
        (sets / f"train_{c + 1}.txt").write_text("\n".join(lines) + "\n")
    return vid


def timed(open_index) -> float:
    begin = time.perf_counter()
    open_index()
    return time.perf_counter() - begin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--snippets", type=int, default=2000)
    parser.add_argument("--frames", type=int, default=5, help="frames (and XMLs) per snippet")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        begin = time.perf_counter()
        root = make_fixture(Path(tmp), args.snippets, args.frames)
        print(f"fixture: {args.snippets} snippets x {args.frames} frames in {time.perf_counter() - begin:.1f} s")
        uncached, first, cached = [], [], []
        for _ in range(args.repeats):  # interleaved, so machine load drifts hit every configuration alike
            uncached.append(timed(lambda: ImageNetVID(root, "train", cache=False)))
            shutil.rmtree(root / INDEX_DIR, ignore_errors=True)
            first.append(timed(lambda: ImageNetVID(root, "train")))
            cached.append(timed(lambda: ImageNetVID(root, "train")))
        videos = ImageNetVID(root, "train")
        assert len(videos) == args.snippets and sum(len(v) for v in videos) == args.snippets * args.frames
        size = sum(p.stat().st_size for p in (root / INDEX_DIR).iterdir())
        build, write, hit = (statistics.median(x) for x in (uncached, first, cached))
        print(f"first opening (parse {args.snippets * args.frames} XMLs, write the cache): {write:.3f} s")
        print(f"second opening (from the cache, {size / 1e6:.2f} MB):                  {hit:.3f} s")
        print(f"opening without the cache:                                   {build:.3f} s")
        print(f"ratio first / second opening: {write / hit:.1f}x; without cache / cached: {build / hit:.1f}x "
              f"(target >= 10x)")


if __name__ == "__main__":
    main()
