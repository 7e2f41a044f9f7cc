"""Cached dataset indexes: open ImageNet VID, DAVIS, COCO and VOC in a fraction of a second.

A reader's *index* is its list of records (paths and boxes, no pixels). Building it parses every
annotation file (a million XMLs for ImageNet VID train, a 450 MB JSON for COCO train), which
takes minutes; :func:`cached_index` builds it once and stores it:

- **where**: beside the data, in ``<dataset folder>/.patchwork_index/``, when that folder is
  writable; otherwise in ``$PATCHWORK_DATA_CACHE/index/`` (default ``./data_cache/index``).
- **keyed by** the reader and its options (split, lists, limits, the dataset's resolved path)
  in the file name, and inside the file by the size and modification time of every file and
  folder the build read or listed (annotation files, list files, the folders globbed for
  frames). Opening re-stats exactly those, no directory walk and no parsing; any difference
  (a touched or edited XML, a new list line, an added frame) rebuilds the index. A file
  rewritten with the same size within the file system's timestamp granularity is not noticed,
  as with ``make``.
- **atomic**: written to a temporary file in the same folder and renamed over the old one, so
  concurrent readers (DDP ranks) see a whole index or none.
- **safe to load**: ``torch.load(weights_only=True)`` of tensors, strings and numbers; no code
  runs on load. A cache that cannot be read or does not match is rebuilt with a logged warning.

Records are stored column-wise (one tensor per field for all videos, paths as one string) so
that loading does not pay per-object unpickling for a million frames.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from patchwork.data.records import (BadDataLog, BinaryPngMask, CocoMask, CorruptDataError, MaskSource,
                                    StillImageRecord, VideoRecord, VocObjectMask)

__all__ = ["CACHE_ENV", "INDEX_DIR", "INDEX_FORMAT", "InputWatch", "data_cache_root", "cached_index",
           "cached_videos", "cached_stills", "index_cache_paths"]

logger = logging.getLogger("patchwork.data")

#: Environment variable naming the data cache root (synthetic data in ``<it>/synthetic``,
#: indexes of read-only datasets in ``<it>/index``).
CACHE_ENV = "PATCHWORK_DATA_CACHE"
#: The folder made beside a dataset for its indexes.
INDEX_DIR = ".patchwork_index"
#: Bump when a reader's records or this file's layout change: older caches are then rebuilt.
INDEX_FORMAT = 1


def data_cache_root() -> Path:
    """``$PATCHWORK_DATA_CACHE`` if set, else ``./data_cache``."""
    root = os.environ.get(CACHE_ENV)
    return Path(root) if root else Path.cwd() / "data_cache"


def _stat(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(size, mtime_ns)``, or ``(-1, -1)`` for a path that does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return -1, -1
    return st.st_size, st.st_mtime_ns


class InputWatch:
    """The files and folders an index build reads, with their state before being read.

    A build calls :meth:`watch` on every file it parses or tests for existence and on every
    folder it lists, *before* reading it (a change during the build then shows on the next
    open). Absent paths are recorded too, so that their appearance triggers a rebuild.
    """

    def __init__(self) -> None:
        self._states: dict[str, tuple[int, int]] = {}

    def watch(self, path: str | os.PathLike[str]) -> Path:
        """Record ``path``'s size and modification time; returns it as a ``Path``."""
        path = Path(path)
        self._states.setdefault(str(path), _stat(path))
        return path

    def __len__(self) -> int:
        return len(self._states)

    def encode(self, base: Path) -> dict[str, Any]:
        """Paths relative to ``base`` (one string) and ``(N, 2)`` int64 sizes and mtimes."""
        return {"paths": _join_paths(list(self._states), base),
                "states": torch.tensor(list(self._states.values()), dtype=torch.int64).reshape(-1, 2)}

    @staticmethod
    def unchanged(encoded: Mapping[str, Any], base: Path) -> bool:
        """Whether every recorded path still has its recorded size and mtime (stops at the first change)."""
        states = encoded["states"].tolist()
        paths = _split_paths(encoded["paths"], base)
        if len(paths) != len(states):
            return False
        # Plain strings, not Paths: a million stats are the whole cost of a cached open.
        return all(_stat(path) == (size, mtime) for path, (size, mtime) in zip(paths, states))


# --------------------------------------------------------------------------- paths
#: Marks a stored path that is not under the base folder (kept whole); no path contains NUL.
_WHOLE = "\0"


def _relative(base: Path) -> tuple[Callable[[str], str], Callable[[str], str]]:
    """``(to_stored, from_stored)``: paths under ``base`` are stored relative to it (a tenth of
    the size), others whole behind a marker."""
    prefix = str(base) + os.sep
    cut = len(prefix)
    return (lambda p: p[cut:] if p.startswith(prefix) else _WHOLE + p,
            lambda p: p[1:] if p[:1] == _WHOLE else prefix + p)


def _join_paths(paths: Sequence[str], base: Path) -> str:
    # One string unpickles in microseconds where a million would take seconds.
    rel, _ = _relative(base)
    return "\n".join(rel(p) for p in paths)


def _split_paths(joined: str, base: Path) -> list[str]:
    _, absolute = _relative(base)
    return [absolute(p) for p in joined.split("\n")] if joined else []


# --------------------------------------------------------------------------- record codecs
def _encode_mask(mask: MaskSource | None, path_to: Callable[[str], str]) -> Any:
    if mask is None:
        return None
    if isinstance(mask, BinaryPngMask):
        return ["png", path_to(mask.path)]
    if isinstance(mask, VocObjectMask):
        return ["voc", path_to(mask.path)]
    if isinstance(mask, CocoMask):
        return ["coco", list(mask.segmentations), mask.height, mask.width]
    raise TypeError(f"cannot cache a {type(mask).__name__} mask")


def _decode_mask(plain: Any, path_of: Callable[[str], str]) -> MaskSource | None:
    if plain is None:
        return None
    kind = plain[0]
    if kind == "png":
        return BinaryPngMask(path_of(plain[1]))
    if kind == "voc":
        return VocObjectMask(path_of(plain[1]))
    if kind == "coco":
        return CocoMask(tuple(plain[1]), int(plain[2]), int(plain[3]))
    raise ValueError(f"unknown mask kind {kind!r}")


def _counts(parts: Sequence[Tensor]) -> Tensor:
    return torch.tensor([len(p) for p in parts], dtype=torch.int64)


def _cat(parts: Sequence[Tensor], empty: Tensor) -> Tensor:
    return torch.cat([empty, *parts]) if parts else empty


def _encode_videos(videos: Sequence[VideoRecord], base: Path) -> dict[str, Any]:
    rel, _ = _relative(base)
    flagged = bool(videos) and all(v.occluded is not None and v.generated is not None for v in videos)
    meta = [{"name": v.name, "frames": [rel(p) for p in v.frame_paths],
             "masks": None if v.masks is None else [_encode_mask(m, rel) for m in v.masks]} for v in videos]
    tensors = {
        "boxes": _cat([v.boxes for v in videos], torch.zeros(0, 4)),
        "labels": _cat([v.labels for v in videos], torch.zeros(0, dtype=torch.int64)),
        "track_ids": _cat([v.track_ids for v in videos], torch.zeros(0, dtype=torch.int64)),
        "box_counts": _counts([v.boxes for v in videos]),
        "frame_offsets": _cat([v.frame_offsets for v in videos], torch.zeros(0, dtype=torch.int64)),
    }
    if flagged:
        tensors["occluded"] = _cat([v.occluded for v in videos], torch.zeros(0, dtype=torch.bool))
        tensors["generated"] = _cat([v.generated for v in videos], torch.zeros(0, dtype=torch.bool))
    return {"meta": json.dumps(meta), "tensors": tensors}


def _decode_videos(encoded: Mapping[str, Any], base: Path) -> list[VideoRecord]:
    _, absolute = _relative(base)
    meta, t = json.loads(encoded["meta"]), encoded["tensors"]
    box_parts = {k: torch.split(t[k], t["box_counts"].tolist()) for k in ("boxes", "labels", "track_ids",
                                                                           "occluded", "generated") if k in t}
    offset_parts = torch.split(t["frame_offsets"], [len(m["frames"]) + 1 for m in meta])
    videos = []
    for i, m in enumerate(meta):
        masks = None if m["masks"] is None else [_decode_mask(x, absolute) for x in m["masks"]]
        videos.append(VideoRecord(
            name=m["name"], frame_paths=[absolute(p) for p in m["frames"]], boxes=box_parts["boxes"][i],
            labels=box_parts["labels"][i], track_ids=box_parts["track_ids"][i], frame_offsets=offset_parts[i],
            masks=masks, occluded=box_parts["occluded"][i] if "occluded" in box_parts else None,
            generated=box_parts["generated"][i] if "generated" in box_parts else None))
    return videos


def _encode_stills(stills: Sequence[StillImageRecord], base: Path) -> dict[str, Any]:
    rel, _ = _relative(base)
    meta = [{"name": s.name, "image": rel(s.image_path),
             "mask": _encode_mask(s.mask, rel)} for s in stills]
    targets = [s.target for s in stills]
    tensors = {
        "boxes": _cat([t["boxes"] for t in targets], torch.zeros(0, 4)),
        "labels": _cat([t["labels"] for t in targets], torch.zeros(0, dtype=torch.int64)),
        "track_ids": _cat([t["track_ids"] for t in targets], torch.zeros(0, dtype=torch.int64)),
        "box_counts": _counts([t["boxes"] for t in targets]),
    }
    return {"meta": json.dumps(meta), "tensors": tensors}


def _decode_stills(encoded: Mapping[str, Any], base: Path) -> list[StillImageRecord]:
    _, absolute = _relative(base)
    meta, t = json.loads(encoded["meta"]), encoded["tensors"]
    parts = {k: torch.split(t[k], t["box_counts"].tolist()) for k in ("boxes", "labels", "track_ids")}
    return [StillImageRecord(m["name"], absolute(m["image"]), {k: parts[k][i] for k in parts},
                             _decode_mask(m["mask"], absolute)) for i, m in enumerate(meta)]


# --------------------------------------------------------------------------- the cache
def index_cache_paths(dataset: str, location: Path, params: Mapping[str, Any]) -> list[Path]:
    """Where the index of ``dataset`` (a reader's name) with ``params`` is looked for, in order:
    beside the data (``location/.patchwork_index``), then ``$PATCHWORK_DATA_CACHE/index``.

    The file name holds a hash of the format version, the reader, its options and the
    dataset's resolved location.
    """
    text = json.dumps({"format": INDEX_FORMAT, "dataset": dataset, "location": str(location.resolve()),
                       "params": params}, sort_keys=True, default=str)
    name = f"{dataset}-{hashlib.sha1(text.encode()).hexdigest()[:16]}.pt"
    return [location / INDEX_DIR / name, data_cache_root() / "index" / name]


def _save_atomically(path: Path, payload: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        torch.save(dict(payload), temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _load(path: Path, base: Path, decode: Callable[[Mapping[str, Any], Path], list]) -> tuple[list, list] | None:
    """The records and skipped files of a valid cache at ``path``; ``None`` when absent or stale
    (a warning when it cannot be read)."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format") != INDEX_FORMAT:
            logger.info("index cache %s has format %s, not %s; rebuilding", path, payload.get("format"), INDEX_FORMAT)
            return None
        if not InputWatch.unchanged(payload["inputs"], base):
            logger.info("index cache %s: annotation or list files changed; rebuilding", path)
            return None
        return decode(payload["records"], base), [tuple(s) for s in json.loads(payload["skipped"])]
    except Exception as error:  # noqa: BLE001 - any unreadable cache is rebuilt, never fatal
        logger.warning("index cache %s is corrupt or unreadable (%s: %s); rebuilding it", path,
                       type(error).__name__, error)
        return None


def cached_index(
    dataset: str,
    location: Path,
    base: Path,
    params: Mapping[str, Any],
    build: Callable[[InputWatch], list],
    bad_data: BadDataLog,
    encode: Callable[[Sequence[Any], Path], dict[str, Any]],
    decode: Callable[[Mapping[str, Any], Path], list],
    enabled: bool = True,
) -> list:
    """A reader's records from its cache, or built by ``build`` and cached.

    Args:
        dataset: the reader's name (``"imagenet_vid"``, ...), part of the cache file name.
        location: the dataset folder the cache goes beside (``location/.patchwork_index``).
        base: the folder record paths are stored relative to.
        params: the reader's options that change its records (JSON-serialisable).
        build: builds the records, calling ``watch`` on everything it reads (see :class:`InputWatch`).
        bad_data: the reader's log; files a cached build skipped are restored into it (and,
            when it is strict, the first is raised as the build would have).
        encode, decode: the record codec (:func:`cached_videos` / :func:`cached_stills` pick it).
        enabled: ``False`` always builds and writes nothing.
    Returns:
        The records.
    """
    if not enabled:
        return build(InputWatch())
    candidates = index_cache_paths(dataset, location, params)
    for path in candidates:
        loaded = _load(path, base, decode)
        if loaded is not None:
            records, skipped = loaded
            for file, reason in skipped:
                bad_data.skip(CorruptDataError(file, reason))  # strict: raises like a fresh build
            logger.debug("index of %s loaded from %s", dataset, path)
            return records
    watch = InputWatch()
    skipped_before = len(bad_data.skipped)
    records = build(watch)
    payload = {"format": INDEX_FORMAT, "records": encode(records, base), "inputs": watch.encode(base),
               "skipped": json.dumps([list(s) for s in bad_data.skipped[skipped_before:]])}
    for path in candidates:
        try:
            _save_atomically(path, payload)
        except OSError as error:  # read-only dataset folder: next candidate
            logger.info("cannot write the index cache %s (%s)", path, error)
            continue
        logger.info("index of %s (%d records, %d inputs) cached in %s", dataset, len(records), len(watch), path)
        return records
    logger.warning("could not cache the index of %s anywhere (%s); it is rebuilt on every open", dataset,
                   ", ".join(map(str, candidates)))
    return records


def cached_videos(dataset: str, location: Path, base: Path, params: Mapping[str, Any],
                  build: Callable[[InputWatch], list[VideoRecord]], bad_data: BadDataLog,
                  enabled: bool = True) -> list[VideoRecord]:
    """:func:`cached_index` for readers of :class:`~patchwork.data.records.VideoRecord` s."""
    return cached_index(dataset, location, base, params, build, bad_data, _encode_videos, _decode_videos, enabled)


def cached_stills(dataset: str, location: Path, base: Path, params: Mapping[str, Any],
                  build: Callable[[InputWatch], list[StillImageRecord]], bad_data: BadDataLog,
                  enabled: bool = True) -> list[StillImageRecord]:
    """:func:`cached_index` for readers of :class:`~patchwork.data.records.StillImageRecord` s."""
    return cached_index(dataset, location, base, params, build, bad_data, _encode_stills, _decode_stills, enabled)
