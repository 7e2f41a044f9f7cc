"""The shared harness hosts any model through its roles (action space, observation, policy network,
learner, reward): two test-only models, one ``Discrete(2)`` and one ``MultiBinary``, go through the
rollout, replay or on-policy updates, checkpoint and resume, streaming evaluation and a report row
with no change to shared code; plus the rollout's alignment and Patchwork's stage 2 / 3 parameter rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

import patchwork.engine.train as train_module
from patchwork.data import SyntheticDataConfig, synthetic_segmentation_data
from patchwork.engine.checkpoint import load_checkpoint
from patchwork.engine.rollout import stream_clip
from patchwork.engine.runner import StreamRunner
from patchwork.engine.tb_logging import read_scalars
from patchwork.engine.train import train
from patchwork.evaluation.report import paper_table
from patchwork.evaluation.rows import evaluate_method
from patchwork.policies import BernoulliPolicy, GreedyPolicy
from patchwork.rl import SegmentationQualityGain
from patchwork.rl.roles import RewardContext
from tests.engine.harness_models import ToyBlocks, ToySwitch

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
TINY = dict(vid_train_videos=1, vid_val_videos=1, vid_frames=[6, 6], vid_frame_size=[64, 96], davis_train_videos=2,
            davis_val_videos=1, davis_frames=[6, 6], davis_frame_size=[64, 96], coco_images=2, voc_images=1,
            still_size=[64, 96], max_objects=3)
TOYS = {"switch": ("tests.engine.harness_models.ToySwitch", "dqn"),
        "blocks": ("tests.engine.harness_models.ToyBlocks", "reinforce")}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthetic_segmentation_data(cache_dir=tmp_path_factory.mktemp("synthetic"),
                                       generator=SyntheticDataConfig(**TINY), image_size=[64, 64], augment=False)


def _clip(data, length=3, streams=2):
    dataset = data.val_clip_dataset(length)
    batch = dataset.collate([dataset[i] for i in range(streams)])
    return batch["frames"].float() / 255, batch["targets"]


# ----------------------------------------------------------------------------- rollout
@pytest.mark.parametrize("model_class", [ToySwitch, ToyBlocks])
@torch.no_grad()
def test_rollout_aligns_observation_action_and_reward(model_class, data):
    torch.manual_seed(0)
    model = model_class().eval()
    policy = GreedyPolicy() if model_class is ToySwitch else BernoulliPolicy(threshold=0.5)
    frames, targets = _clip(data)
    reward = SegmentationQualityGain()
    transitions = list(stream_clip(StreamRunner(model, policy, decode=False), frames, targets, reward))
    assert len(transitions) == frames.shape[1]
    # The same clip stepped by hand: A_{t+1} from the policy network on S_t, R_{t+1} on frame t+1.
    state = model.init_state(2, (64, 64))
    previous = [model.empty_prediction((64, 64), "cpu")] * 2
    observation = None
    for t, transition in enumerate(transitions):
        if t == 0:
            assert transition.obs is None and transition.scores is None
            expected_actions = model.action_space.fixed_first(2, (64, 64))
        else:
            for key, value in transition.obs.items():
                assert torch.equal(value, transitions[t - 1].next_obs[key])  # S_t is the last step's S_{t+1}
                assert torch.equal(value, observation[key])
            scores = model.policy_network(observation)
            assert torch.equal(transition.scores, scores)
            expected_actions = policy.select(scores, torch.full((2,), t))
        assert torch.equal(transition.actions, expected_actions)
        out = model(frames[:, t], expected_actions, state)
        state = out.state
        context = RewardContext(model, frames[:, t], expected_actions, out, out.predictions, previous,
                                [clip[t] for clip in targets])
        result = reward(context)
        assert torch.equal(transition.rewards, result.rewards) and torch.equal(transition.quality, result.quality)
        observation = {k: v.clone() for k, v in model.observe(out).items()}
        previous = out.predictions
        for key, value in transition.next_obs.items():
            assert torch.equal(value, observation[key])


# ------------------------------------------------------------------ train, resume, evaluate
def _config(tmp_path: Path, toy: str, run: str, steps: int = 4):
    target, learner = TOYS[toy]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[
            "experiment=test_tiny", "data=synthetic_davis", "reward=segmentation_quality_gain", "stage=[stage2]",
            "device=cpu", f"run_dir={tmp_path / run}", f"stage.stage2.steps={steps}", "stage.stage2.checkpoint_every=1",
        ])
    with open_dict(cfg):
        cfg.model = OmegaConf.create({"_target_": target})
        cfg.data.generator = OmegaConf.create({"_target_": "patchwork.data.SyntheticDataConfig", **TINY})
        cfg.data.image_size = [64, 64]
        if learner == "reinforce":
            cfg.learner = OmegaConf.load(CONFIG_DIR / "learner" / "reinforce.yaml")
            cfg.learner.update_every = 2
    return cfg


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("toy", sorted(TOYS))
def test_policy_stage_trains_checkpoints_and_resumes_exactly(toy, tmp_path, monkeypatch, data):
    monkeypatch.setenv("PATCHWORK_DATA_CACHE", str(tmp_path / "cache"))
    summary = train(_config(tmp_path, toy, "straight"))["stage2"]
    straight = load_checkpoint(tmp_path / "straight" / "checkpoints" / "stage2" / "last.pt")
    assert straight["extra"]["complete"] and "val_quality_learned" in summary

    def interrupt_after(directory, stage, dist):
        def hook(step, model):
            if step == 3:  # after step 2's checkpoint, before step 3's: a kill mid-stage
                raise Interrupted
        return hook

    with monkeypatch.context() as patch:
        patch.setattr(train_module, "_parameter_dump", interrupt_after)
        with pytest.raises(Interrupted):
            train(_config(tmp_path, toy, "resumed"))
    killed = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "stage2" / "last.pt")
    assert killed["step"] == 2 and not killed["extra"].get("complete")
    cfg = _config(tmp_path, toy, "resumed")
    cfg.resume = True
    train(cfg)
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "stage2" / "last.pt")
    for key, value in straight["models"]["model"].items():
        assert torch.equal(value, resumed["models"]["model"][key]), key
    assert _flatten(straight["learners"]) == _flatten(resumed["learners"])
    # Only the policy network learnt: the task network's conv is where the stage's seed put it.
    initial = train_module.StageContext(cfg, "stage2", None, None, None, None, None).build_model()
    assert torch.equal(straight["models"]["model"]["head.weight"], initial.head.weight)
    policy = [k for k in straight["models"]["model"] if not k.startswith("head.")]
    assert any(not torch.equal(straight["models"]["model"][k], initial.state_dict()[k]) for k in policy)


def _flatten(value, prefix=""):
    """Nested containers of tensors as ``{path: tensor as a list}`` (for exact comparison)."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flatten(item, f"{prefix}{key}.").items()}
    if isinstance(value, (list, tuple)):
        return {k: v for i, item in enumerate(value) for k, v in _flatten(item, f"{prefix}{i}.").items()}
    return {prefix: value.tolist() if isinstance(value, torch.Tensor) else value}


@pytest.mark.parametrize(("model_class", "policy"), [(ToySwitch, GreedyPolicy()), (ToyBlocks, BernoulliPolicy())])
def test_streaming_evaluation_and_a_report_row_for_any_action_space(model_class, policy, data):
    torch.manual_seed(0)
    model = model_class().eval()
    row, result = evaluate_method(model, data, policy, streams=2, latency_videos=1, latency_frames=3)
    assert row["method"] == model.describe().label and row["family"] == model.describe().family
    assert row["task"] == "segmentation" and 0 <= row["J"] <= 100 and row["mflops_max"] >= row["mflops_avg"] > 0
    video = result.videos[0]
    shape = model.action_space.shape((64, 64))
    assert video.actions.shape == (len(video), *shape) and video.actions.dtype == model.action_space.dtype
    table = paper_table([row])
    assert table.rows[0]["Method"] == row["method"] and {"J", "F"} <= set(table.columns)


# ------------------------------------------------------- Patchwork's stages 2 and 3 (Sec. 3.4)
def _patchwork_stage(tmp_path, monkeypatch, stage: str):
    monkeypatch.setenv("PATCHWORK_DATA_CACHE", str(tmp_path / "cache"))
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=test_tiny", "device=cpu", f"stage=[{stage}]",
                                          f"run_dir={tmp_path / stage}", f"stage.{stage}.steps=2"])
    train(cfg)
    final = load_checkpoint(tmp_path / stage / "checkpoints" / stage / "last.pt")["models"]["model"]
    initial = train_module.StageContext(cfg, stage, None, None, None, None, None).build_model()
    return initial, final


def test_stage2_moves_only_the_attention_parameters(tmp_path, monkeypatch):
    initial, final = _patchwork_stage(tmp_path, monkeypatch, "stage2")
    policy = initial.policy_parameter_names()
    assert policy and all(name.startswith("attention.") for name in policy)
    for name, value in initial.state_dict().items():
        if name in policy:
            continue
        assert torch.equal(final[name], value), name  # the task network, BatchNorm statistics included
    assert any(not torch.equal(final[name], initial.state_dict()[name]) for name in policy)


def test_stage3_keeps_batchnorm_frozen_and_fine_tunes_the_rest(tmp_path, monkeypatch):
    initial, final = _patchwork_stage(tmp_path, monkeypatch, "stage3")
    state = initial.state_dict()
    batchnorm = {f"{module_name}.{key}" for module_name, module in initial.named_modules()
                 if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
                 for key in module.state_dict()}
    assert batchnorm
    for name in batchnorm:  # running statistics and affine weights alike
        assert torch.equal(final[name], state[name]), name
    convs = [name for name in state if name.endswith("weight") and name not in batchnorm
             and name not in initial.policy_parameter_names()]
    assert any(not torch.equal(final[name], state[name]) for name in convs)
    assert any(not torch.equal(final[name], state[name]) for name in initial.policy_parameter_names())


# ------------------------------------------------------------- Looking Fast and Slow's stages
def _lfs_config(tmp_path, run):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=["experiment=lfs_test_tiny", "device=cpu", f"run_dir={tmp_path / run}"])


def test_lfs_stages_train_checkpoint_and_resume_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHWORK_DATA_CACHE", str(tmp_path / "cache"))
    summary = train(_lfs_config(tmp_path, "straight"))
    assert set(summary) == {"lfs_detection", "lfs_policy"} and "val_quality_learned" in summary["lfs_policy"]
    # TensorBoard has the paper's Fig. 8 curves: the f0 rate (training and validation), Q-values, losses.
    curves = read_scalars(tmp_path / "straight" / "tensorboard" / "lfs_policy")
    assert {"actions/f0_rate", "val/f0_rate", "q/mean", "losses/td", "val/quality"} <= set(curves)
    assert all(0.0 <= rate <= 1.0 for _, rate in curves["actions/f0_rate"] + curves["val/f0_rate"])
    assert [step for step, _ in curves["actions/f0_rate"]] == [1, 2, 3]  # log_every=1
    assert 0.0 <= summary["lfs_policy"]["val_f0_rate_learned"] <= 1.0
    for stage, at in (("lfs_detection", 2), ("lfs_policy", 2)):
        def interrupt_after(directory, name, dist, stage=stage, at=at):
            def hook(step, model):
                if name == stage and step == at + 1:  # after step `at`'s checkpoint: a kill mid-stage
                    raise Interrupted
            return hook

        with monkeypatch.context() as patch:
            patch.setattr(train_module, "_parameter_dump", interrupt_after)
            cfg = _lfs_config(tmp_path, "resumed")
            cfg.resume = stage != "lfs_detection"
            with pytest.raises(Interrupted):
                train(cfg)
    cfg = _lfs_config(tmp_path, "resumed")
    cfg.resume = True
    train(cfg)
    for stage in ("lfs_detection", "lfs_policy"):
        straight = load_checkpoint(tmp_path / "straight" / "checkpoints" / stage / "last.pt")
        resumed = load_checkpoint(tmp_path / "resumed" / "checkpoints" / stage / "last.pt")
        for key, value in straight["models"]["model"].items():
            assert torch.equal(value, resumed["models"]["model"][key]), (stage, key)
    # The policy stage moved only the interleaving Q-network: the detector is the detection stage's.
    detection = load_checkpoint(tmp_path / "straight" / "checkpoints" / "lfs_detection" / "last.pt")["models"]["model"]
    policy = load_checkpoint(tmp_path / "straight" / "checkpoints" / "lfs_policy" / "last.pt")["models"]["model"]
    moved = {k for k in policy if not torch.equal(policy[k], detection[k])}
    assert moved and all(k.startswith("interleaving.") for k in moved)
