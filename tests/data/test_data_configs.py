import dataclasses
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from data_fixtures import make_coco, make_davis, make_vid, make_voc
from patchwork.data import FakeVideoSynthesizer, SyntheticDataConfig, VideoTaskData

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
DATA_CONFIGS = sorted(p.stem for p in (CONFIG_DIR / "data").glob("*.yaml"))
TINY = dict(vid_train_videos=2, vid_val_videos=1, vid_frames=[3, 3], vid_frame_size=[64, 64], davis_train_videos=1,
            davis_val_videos=1, davis_frames=[3, 3], davis_frame_size=[64, 64], coco_images=3, voc_images=2,
            still_size=[64, 64], max_objects=3, object_scale=0.5)


def _override(key: str, value) -> str:
    return f"{key}=[{','.join(map(str, value))}]" if isinstance(value, list) else f"{key}={value}"


@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    make_vid(root), make_davis(root), make_coco(root), make_voc(root)
    return root


def test_there_is_a_config_per_dataset():
    assert set(DATA_CONFIGS) >= {"imagenet_vid", "davis2016", "synthetic_vid", "synthetic_davis"}


@pytest.mark.parametrize("name", DATA_CONFIGS)
def test_every_data_config_composes_and_instantiates(name, datasets_root, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PATCHWORK_DATASETS", str(datasets_root))
    overrides = [f"+data={name}", "data.image_size=[32,32]", "data.clip_length=2", "data.samples_per_epoch=4"]
    if name.startswith("synthetic"):
        cache = tmp_path_factory.getbasetemp() / "config_cache"
        overrides += [f"data.cache_dir={cache}"] + [_override(f"data.generator.{k}", v) for k, v in TINY.items()]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(overrides=overrides)
    data = instantiate(cfg.data)
    assert isinstance(data, VideoTaskData) and data.image_size == (32, 32)
    assert data.train_videos and data.val_videos and data.still_images
    segmentation = "davis" in name
    frame = data.frame_dataset()[0]
    assert frame["image"].shape == (3, 32, 32) and ("mask" in frame["target"]) == segmentation
    clip = data.clip_dataset()[1]
    assert clip["frames"].shape == (2, 3, 32, 32) and ("mask" in clip["targets"][0]) == segmentation
    assert data.val_clip_dataset(clip_length=2)[0]["frames"].shape[1:] == (3, 32, 32)


def test_generator_and_fake_video_configs_match_the_code_defaults():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="make_synthetic_data")
    assert instantiate(cfg.generator) == SyntheticDataConfig()
    fake, default = instantiate(cfg.fake_video), FakeVideoSynthesizer()
    assert vars(fake) == vars(default)
    assert set(TINY) <= {f.name for f in dataclasses.fields(SyntheticDataConfig)}
