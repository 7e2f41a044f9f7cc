"""Every Hydra config composes, its parts instantiate, and its model takes a step; config errors
fail before any work starts (issue 5: "a config error (window grid incompatible with the image
size, unknown key) fails before any work starts")."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from patchwork.data import FakeVideoSynthesizer, SyntheticDataConfig
from patchwork.engine.stages import ClipSupervisedStage, PolicyStage, SupervisedStage
from patchwork.engine.train import build_stage
from patchwork.models.streaming import StreamingModel
from patchwork.nn import WindowGrid
from patchwork.rl import LinearEpsilon

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))
SCRIPT_CONFIGS = ["flops", "benchmark_latency", "make_synthetic_data", "evaluate", "demo", "benchmark_blockcopy"]
SMALL_WIDTH = 0.35  # every model is built this narrow: the structure is what is tested, not the size


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def compose_config(config_name: str = "train", overrides: list[str] | tuple[str, ...] = (),
                   hydra_config: bool = False) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra_config)


def leaf_paths(node: dict, prefix: str = "") -> list[str]:
    """Dotted paths of the values of a plain (unresolved) config dict; lists count as values."""
    paths = []
    for key, value in node.items():
        paths += leaf_paths(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
    return paths


TINY_SYNTHETIC = dict(
    vid_train_videos=1, vid_val_videos=1, vid_frames=[4, 4], vid_frame_size=[64, 96], davis_train_videos=1,
    davis_val_videos=1, davis_frames=[4, 4], davis_frame_size=[64, 96], coco_images=2, voc_images=1,
    still_size=[64, 96], max_objects=3,
)


@pytest.fixture(scope="module")
def synthetic_frames(tmp_path_factory):
    """``(task, image_size) -> (frames (2, 3, H, W) in [0, 1], targets)``: two frames of the
    built-in synthetic videos (a tiny set generated once for this module), resized to the size."""
    from patchwork.data import synthetic_detection_data, synthetic_segmentation_data

    cache = tmp_path_factory.mktemp("synthetic")
    generator = SyntheticDataConfig(**TINY_SYNTHETIC)
    build = {"detection": synthetic_detection_data, "segmentation": synthetic_segmentation_data}

    def frames(task: str, image_size: tuple[int, int]) -> tuple[torch.Tensor, list[dict]]:
        data = build[task](cache_dir=cache, generator=generator, image_size=list(image_size), augment=False)
        videos = data.val_clip_dataset(clip_length=2)
        clip = videos[0]
        return clip["frames"].float() / 255, clip["targets"]

    return frames


def first_and_last_actions(model: StreamingModel) -> torch.Tensor | None:
    """Actions of two streams: the first and the last of the model's discrete space (None without one)."""
    space = model.action_space
    return None if space is None else torch.tensor([0, space.n - 1])


def check_model_steps(model: StreamingModel, image_size: tuple[int, int], synthetic_frames) -> None:
    """On two synthetic frames of ``image_size``: an evaluation step (a full-frame keyframe pass,
    then one window step, decoded predictions), then one training step on the task loss."""
    model.eval()
    frames, targets = synthetic_frames(model.task, image_size)
    with torch.no_grad():
        state = model.init_state(2, image_size)
        out = model(frames, None, state)
        out = model(frames, first_and_last_actions(model), out.state)
        observation = model.observe(out)
        scores = None if observation is None else model.policy_network(observation)
    assert len(out.predictions) == 2
    for prediction in out.predictions:
        if "mask" in prediction:  # segmentation: a full-frame mask
            assert prediction["mask"].shape[-2:] == image_size
        else:  # detection: boxes in pixels with one score each
            assert prediction["boxes"].shape[-1] == 4 and len(prediction["scores"]) == len(prediction["boxes"])
    if model.action_space is not None:
        assert scores.shape == (2, model.action_space.n) and torch.isfinite(scores).all()
    else:
        assert observation is None and model.policy_network is None
    check_training_step(model, frames, targets)


def check_training_step(model: StreamingModel, frames: torch.Tensor, targets: list[dict]) -> None:
    """One optimiser step on the task loss: finite losses and gradients that change the weights."""
    model.train()
    height, width = frames.shape[-2:]
    out = model(frames, first_and_last_actions(model), model.init_state(2, (height, width)))
    losses = model.loss(out, targets)
    loss = sum(losses.values())
    assert torch.isfinite(loss), losses
    parameters = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in parameters]
    optimizer = torch.optim.SGD(parameters, lr=0.01)
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, parameters))
    model.eval()


def test_test_tiny_and_quick_experiments_exist():
    assert {"quick", "test_tiny"} <= set(EXPERIMENTS)


PATCHWORK_EXPERIMENTS = [name for name in EXPERIMENTS if not name.startswith(("lfs", "blockcopy"))]
LFS_EXPERIMENTS = [name for name in EXPERIMENTS if name.startswith("lfs")]
BLOCKCOPY_EXPERIMENTS = [name for name in EXPERIMENTS if name.startswith("blockcopy")]


def check_common_parts(cfg: DictConfig, name: str) -> None:
    """The cheap parts instantiate (the data would generate or read whole datasets: not here)."""
    assert isinstance(instantiate(cfg.learner).keywords["epsilon"], LinearEpsilon)
    assert instantiate(cfg.reward).task == ("segmentation" if "segmentation" in name else "detection")
    if "generator" in cfg.data:
        assert isinstance(instantiate(cfg.data.generator), SyntheticDataConfig)
    assert isinstance(instantiate(cfg.data.fake_video), FakeVideoSynthesizer)
    parameter = torch.nn.Parameter(torch.zeros(3))
    optimizer = instantiate(cfg.optim.optimizer)([parameter], lr=0.1)
    first = next(iter(cfg.stage.values()))
    scheduler = instantiate(cfg.optim.scheduler)(optimizer, max_lr=0.1, total_steps=int(first.steps))
    optimizer.step(), scheduler.step()


@pytest.mark.parametrize("name", PATCHWORK_EXPERIMENTS)
def test_every_patchwork_experiment_composes_and_its_parts_instantiate(name, synthetic_frames):
    cfg = compose_config(overrides=[f"experiment={name}"])
    grid = WindowGrid(*cfg.model.grid)
    image_size = tuple(cfg.data.image_size)
    grid.check_image_size(image_size)  # the experiment's grid fits its images

    # Every selected stage is a stage object whose constructor takes exactly the node's keys.
    assert list(cfg.stage) == ["stage1", "stage2", "stage3"]
    stages = {name: build_stage(cfg, name) for name in cfg.stage}
    assert isinstance(stages["stage1"], SupervisedStage)
    assert isinstance(stages["stage2"], PolicyStage) and stages["stage2"].lr_task is None
    assert isinstance(stages["stage3"], PolicyStage) and stages["stage3"].lr_task > 0
    for stage in stages.values():
        assert int(stage.steps) > 0 and int(stage.checkpoint_every) > 0
    assert grid.num_windows > 1  # stages 2 and 3 learn an attention policy over the windows
    check_common_parts(cfg, name)

    # Stage 1's single-frame model and the recurrent stages' Patchwork model both take a step
    # (at the configured image size when that is small, else at the smallest fitting size).
    small = tuple(s if s <= 2 * grid.slices * 32 else grid.slices * 32 for s in image_size)
    stage1_model = instantiate(cfg.model, **cfg.stage.stage1.model_overrides, width_mult=SMALL_WIDTH, weights=None)
    assert stage1_model.action_space is None  # stage 1 trains the single-frame model
    check_model_steps(stage1_model, small, synthetic_frames)
    model = instantiate(cfg.model, width_mult=SMALL_WIDTH, weights=None)  # weights: not read in a test
    assert model.grid == grid
    check_model_steps(model, small, synthetic_frames)


@pytest.mark.parametrize("name", LFS_EXPERIMENTS)
def test_every_lfs_experiment_composes_and_its_model_steps(name, synthetic_frames):
    cfg = compose_config(overrides=[f"experiment={name}"])
    assert list(cfg.stage) == ["lfs_detection", "lfs_policy"]
    stages = {name: build_stage(cfg, name) for name in cfg.stage}
    assert isinstance(stages["lfs_detection"], ClipSupervisedStage) and not stages["lfs_detection"].policy.needs_scores
    assert isinstance(stages["lfs_policy"], PolicyStage) and stages["lfs_policy"].lr_task is None
    check_common_parts(cfg, name)
    image_size = tuple(cfg.data.image_size)
    small = image_size if max(image_size) <= 128 else (64, 64)
    model = instantiate(cfg.model, image_size=list(small), width_f0=SMALL_WIDTH, state_channels=16,
                        extra_channels=[16, 16, 16, 16])
    check_model_steps(model, small, synthetic_frames)


@pytest.mark.parametrize("name, maps", [("lfs_quick", (8, 8)), ("lfs_paper", (10, 10))])
def test_lfs_experiments_maps(name, maps):
    # lfs_quick removes one more stride from each extractor than the paper, whose 10x10 maps at 320
    # lfs_paper keeps; the map size is what the default boxes are laid on.
    cfg = compose_config(overrides=[f"experiment={name}"])
    model = instantiate(cfg.model, state_channels=16, extra_channels=[16, 16, 16, 16], adaptive_policy=False)
    assert model.map_size(tuple(cfg.data.image_size)) == maps


def check_blockcopy_model_steps(model: StreamingModel, image_size: tuple[int, int], synthetic_frames) -> None:
    """Every block, then a random mask, decoded; the policy's logits per block; a task-loss step."""
    from patchwork.nn.spaces import MultiBinary

    assert isinstance(model.action_space, MultiBinary) and model.describe().family == "BlockCopy"
    model.eval()
    frames, targets = synthetic_frames(model.task, image_size)
    with torch.no_grad():
        out = model(frames, None, model.init_state(2, image_size))
        mask = model.action_space.sample(2, image_size, torch.Generator().manual_seed(0))
        out = model(frames, mask, out.state)
        logits = model.policy_network(model.policy_input(model.observe(out), frames))
    assert len(out.predictions) == 2 and logits.shape == mask.shape and torch.isfinite(logits).all()
    model.train()
    out = model(frames, None, model.init_state(2, image_size))
    loss = sum(model.loss(out, targets).values())
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.task_parameters() if p.requires_grad)
    model.eval()


@pytest.mark.parametrize("name", BLOCKCOPY_EXPERIMENTS)
def test_every_blockcopy_experiment_composes_and_its_model_steps(name, synthetic_frames):
    from patchwork.rl import InformationGainReward, Reinforce

    cfg = compose_config(overrides=[f"experiment={name}"])
    assert list(cfg.stage) == ["stage1", "blockcopy_policy"]
    stages = {name: build_stage(cfg, name) for name in cfg.stage}
    assert isinstance(stages["stage1"], SupervisedStage) and not stages["stage1"].model_overrides
    policy_stage = stages["blockcopy_policy"]
    assert isinstance(policy_stage, PolicyStage) and policy_stage.lr_task is None
    parameter = torch.nn.Parameter(torch.zeros(3))
    optimizer = policy_stage.learner_optimizer(cfg)([parameter])
    assert isinstance(optimizer, torch.optim.RMSprop) and optimizer.defaults["weight_decay"] == 1e-3
    assert optimizer.defaults["lr"] == 1e-4
    assert instantiate(cfg.learner).func is Reinforce
    reward = instantiate(cfg.reward)
    assert isinstance(reward, InformationGainReward) and reward.target == cfg.model.target_cost
    image_size = tuple(cfg.data.image_size)
    model = instantiate(cfg.model, width_mult=SMALL_WIDTH)
    model.check_image_size(image_size)
    check_blockcopy_model_steps(model, (64, 64), synthetic_frames)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_only_sets_keys_that_exist(name):
    """A typo in an experiment file (``stpes: 5``) would silently add a key nobody reads: Hydra's
    struct check covers command-line overrides only, not the merging of config files."""
    cfg = compose_config(overrides=[f"experiment={name}"], hydra_config=True)
    choices = {group: choice for group, choice in cfg.hydra.runtime.choices.items()
               if group != "experiment" and not group.startswith("hydra/") and choice is not None}
    base = compose_config(overrides=[f"{group}={choice}" for group, choice in choices.items()])
    experiment = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "experiment" / f"{name}.yaml"), resolve=False)
    experiment.pop("defaults", None)
    missing = object()
    for path in leaf_paths(experiment):
        if OmegaConf.select(base, path, default=missing) is missing:
            # Allowed only as an argument of a constructor node (instantiating it checks the name).
            parent = OmegaConf.select(cfg, path.rpartition(".")[0]) if "." in path else cfg
            assert isinstance(parent, DictConfig) and "_target_" in parent, f"{name}.yaml sets unknown key {path}"


def test_blockcopy_model_configs_build_from_a_model_config_or_name_a_checkpoint(synthetic_frames):
    cfg = compose_config(overrides=["model=blockcopy", "model.block_size=32", "model.policy_width=0.25"])
    check_blockcopy_model_steps(instantiate(cfg.model, width_mult=SMALL_WIDTH), (64, 64), synthetic_frames)
    checkpoint = compose_config(overrides=["model=blockcopy_checkpoint"])
    assert checkpoint.model.task_model._target_ == "patchwork.engine.loading.checkpoint_model"
    assert OmegaConf.is_missing(checkpoint.model.task_model, "path")


@pytest.mark.parametrize("name", [m for m in MODELS if not m.startswith(("lfs", "blockcopy"))])  # with their experiments
def test_every_patchwork_model_config_builds_and_steps(name, synthetic_frames):
    cfg = compose_config(overrides=[f"model={name}"])
    grid = WindowGrid(*cfg.model.grid)
    model = instantiate(cfg.model, width_mult=SMALL_WIDTH, weights=None)
    assert model.grid == grid
    assert (1 if model.action_space is None else model.action_space.n) == grid.num_windows
    side = max(grid.slices * 32, 64)  # the smallest size the grid fits
    check_model_steps(model, (side, side), synthetic_frames)
    # Stage 1 builds every model config as its single-frame form (Sec. 3.4).
    check_model_steps(instantiate(cfg.model, grid=[1, 1], width_mult=SMALL_WIDTH, weights=None), (64, 64),
                      synthetic_frames)


@pytest.mark.parametrize("name", SCRIPT_CONFIGS)
def test_every_script_config_composes(name):
    if not (CONFIG_DIR / f"{name}.yaml").is_file():
        pytest.skip(f"configs/{name}.yaml does not exist (yet)")
    cfg = compose_config(name)
    assert isinstance(cfg, DictConfig) and len(cfg) > 0
    for key in ("generator", "data.generator"):
        if OmegaConf.select(cfg, key) is not None:
            assert isinstance(instantiate(OmegaConf.select(cfg, key)), SyntheticDataConfig)
    for key in ("fake_video", "data.fake_video"):
        if OmegaConf.select(cfg, key) is not None:
            assert isinstance(instantiate(OmegaConf.select(cfg, key)), FakeVideoSynthesizer)
    for key in ("image_size", "data.image_size"):
        size = OmegaConf.select(cfg, key)
        if isinstance(size, ListConfig):
            assert len(size) == 2 and all(int(s) % 32 == 0 for s in size), (key, size)


# ------------------------------------------------------------------- fail before any work
def test_unknown_key_on_the_command_line_fails_at_composition():
    with pytest.raises(ConfigCompositionException, match="not_a_key"):
        compose_config(overrides=["experiment=test_tiny", "stage.stage1.not_a_key=1"])
    with pytest.raises(ConfigCompositionException, match="not_a_key"):
        compose_config(overrides=["experiment=test_tiny", "learner.not_a_key=1"])


def run_train_in_process(overrides: list[str], tmp_path: Path, monkeypatch) -> Path:
    """``train(cfg)`` on a composed config with a fresh data cache; returns the run directory."""
    from patchwork.engine.train import train

    monkeypatch.setenv("PATCHWORK_DATA_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    cfg = compose_config(overrides=["experiment=test_tiny", "device=cpu", f"run_dir={run_dir}", *overrides])
    train(cfg)
    return run_dir


def assert_no_work_done(tmp_path: Path) -> None:
    assert not (tmp_path / "cache").exists(), "synthetic data was generated before the config error"
    assert not (tmp_path / "run").exists(), "the run wrote logs or checkpoints before the config error"


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.image_size=[100,100]"], "100x100"),        # 100 is not divisible by M * 32 = 64
    (["data.image_size=[64,96]"], "64x96"),
    (["model.grid=[4,2]"], "M\\*32 = 128"),             # test_tiny's 64x64 is too small for M = 4
])
def test_grid_incompatible_with_the_image_size_fails_before_any_work(overrides, message, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=message):
        run_train_in_process(overrides, tmp_path, monkeypatch)
    assert_no_work_done(tmp_path)


def test_unknown_stage_key_from_a_config_file_fails_before_any_work(tmp_path, monkeypatch):
    # "+" adds the key the way a misspelt key in an experiment file does (file merges are not
    # struct-checked); the run would silently use the default number of steps.
    with pytest.raises(ValueError, match="stpes"):
        run_train_in_process(["+stage.stage1.stpes=2"], tmp_path, monkeypatch)
    assert_no_work_done(tmp_path)
