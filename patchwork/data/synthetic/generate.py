"""Generate the synthetic dataset on first use, into a cache directory.

The data for a config lives in ``<cache_dir>/<config.key()>/``. It is written into a temporary
sibling directory, marked ``COMPLETE`` and renamed into place, so a crash never leaves a
half-written set behind; a directory without the marker (copied or interrupted by hand) is
regenerated. Concurrent first uses both generate; the first rename wins.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch

from patchwork.data.synthetic import writers
from patchwork.data.synthetic.config import SyntheticDataConfig, SyntheticDataPaths, default_cache_dir

logger = logging.getLogger("patchwork.data")

MARKER = "COMPLETE"


def generate_synthetic_data(root: str | Path, config: SyntheticDataConfig) -> SyntheticDataPaths:
    """Write all four synthetic sets under ``root`` (no marker, no caching; see
    :func:`ensure_synthetic_data`). One process, one thread: the default sizes take seconds,
    and forking after torch has started its thread pool can deadlock."""
    paths = SyntheticDataPaths(Path(root))
    year_dir = paths.voc_root / f"VOC{paths.VOC_YEAR}"
    jobs: list[tuple[str, str, Callable[[], Any]]] = []
    for split, count in (("train", config.vid_train_videos), ("val", config.vid_val_videos)):
        jobs += [("vid", split, partial(writers.write_vid_snippet, paths.vid_root, config, split, i))
                 for i in range(count)]
    for split, count in (("train", config.davis_train_videos), ("val", config.davis_val_videos)):
        jobs += [("davis", split, partial(writers.write_davis_sequence, paths.davis_root, config, split, i))
                 for i in range(count)]
    jobs += [("coco", "train", partial(writers.write_coco_image, paths.coco_image_dir, config, i))
             for i in range(config.coco_images)]
    jobs += [("voc", "train", partial(writers.write_voc_image, year_dir, config, i)) for i in range(config.voc_images)]

    # One torch thread: the drawing ops are small, and on a shared 2-core machine idle-spinning
    # intra-op threads slow the single-threaded JPEG encoder down several times.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = [job() for _, _, job in jobs]
    finally:
        torch.set_num_threads(threads)

    units: dict[str, dict[str, list[Any]]] = {}
    for (dataset, split, _), result in zip(jobs, results):
        units.setdefault(dataset, {}).setdefault(split, []).append(result)
    writers.finish_vid(paths.vid_root, units.get("vid", {}))
    writers.finish_davis(paths.davis_root, units.get("davis", {}))
    writers.finish_coco(paths.coco_annotation_file, units.get("coco", {}).get("train", []))
    writers.finish_voc(year_dir, units.get("voc", {}).get("train", []))
    return paths


def ensure_synthetic_data(cache_dir: str | Path | None = None, config: SyntheticDataConfig | None = None
                          ) -> SyntheticDataPaths:
    """Paths of the synthetic dataset for ``config``, generating it first if needed.

    Args:
        cache_dir: where generated sets are kept (``None``: ``$PATCHWORK_DATA_CACHE/synthetic``
            or ``./data_cache/synthetic``).
        config: sizes and seed (``None``: the defaults).
    """
    config = config if config is not None else SyntheticDataConfig()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = cache / config.key()
    if (final / MARKER).is_file():
        return SyntheticDataPaths(final)
    if final.exists():
        logger.warning("synthetic data at %s has no %s marker (interrupted?); regenerating", final, MARKER)
        shutil.rmtree(final, ignore_errors=True)
    staging = cache / f".staging-{config.key()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    logger.info("generating synthetic data into %s", final)
    begin = time.perf_counter()
    try:
        generate_synthetic_data(staging, config)
        (staging / MARKER).write_text(json.dumps({"config": config.__dict__, "key": config.key(),
                                                  "seconds": round(time.perf_counter() - begin, 2)}, default=list))
        try:
            os.rename(staging, final)
        except OSError:  # another process finished first
            if not (final / MARKER).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("synthetic data ready in %.1f s", time.perf_counter() - begin)
    return SyntheticDataPaths(final)
