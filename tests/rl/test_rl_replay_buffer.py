"""Replay buffer: circular writes, seeded sampling, checkpoint round trip, byte accounting."""

import io

import pytest
import torch

from patchwork.rl import DEFAULT_CAPACITY, ReplayBuffer

SPEC = {"memory": ((2, 3), torch.float32), "history": ((4,), torch.float32), "frame": ((), torch.int64)}


def transitions(values):
    """One transition per value v: every observation entry and the reward encode v."""
    values = torch.as_tensor(values, dtype=torch.float32)
    batch = values.shape[0]
    obs = {
        "memory": values.view(-1, 1, 1).expand(batch, 2, 3).clone(),
        "history": values.view(-1, 1).expand(batch, 4) / 100,
        "frame": values.long(),
    }
    next_obs = {name: value + 1 for name, value in obs.items()}
    return obs, values.long() % 3, values, next_obs, values.long() % 2 == 1


def test_add_wraps_around():
    buffer = ReplayBuffer(5, SPEC)
    buffer.add(*transitions([0, 1, 2]))
    assert (len(buffer), buffer.position) == (3, 3)
    buffer.add(*transitions([3, 4, 5]))
    assert (len(buffer), buffer.position) == (5, 1)
    state = buffer.state_dict()
    # Slots 3, 4 then 0 were written: the oldest transition (0) was overwritten by 5.
    assert torch.equal(state["rewards"], torch.tensor([5.0, 1.0, 2.0, 3.0, 4.0]))
    assert torch.equal(state["obs"]["frame"], torch.tensor([5, 1, 2, 3, 4]))
    assert torch.equal(state["next_obs"]["frame"], torch.tensor([6, 2, 3, 4, 5]))
    assert torch.equal(state["dones"], torch.tensor([True, True, False, True, False]))


def test_batch_larger_than_capacity_equals_adding_one_by_one():
    big = ReplayBuffer(4, SPEC)
    big.add(*transitions([9]))
    big.add(*transitions([0, 1, 2, 3, 4, 5]))
    single = ReplayBuffer(4, SPEC)
    for value in [9, 0, 1, 2, 3, 4, 5]:
        single.add(*transitions([value]))
    assert big.position == single.position == 3
    for key in ("rewards", "actions", "dones"):
        assert torch.equal(big.state_dict()[key], single.state_dict()[key])
    assert torch.equal(big.state_dict()["rewards"], torch.tensor([3.0, 4.0, 5.0, 2.0]))


def test_sample_is_seeded_and_consistent():
    buffer = ReplayBuffer(8, SPEC)
    buffer.add(*transitions(range(6)))
    first = buffer.sample(32, torch.Generator().manual_seed(7))
    second = buffer.sample(32, torch.Generator().manual_seed(7))
    other = buffer.sample(32, torch.Generator().manual_seed(8))
    assert torch.equal(first["indices"], second["indices"])
    assert not torch.equal(first["indices"], other["indices"])
    assert first["indices"].max() < 6  # only filled slots
    # Each sampled row is one whole transition.
    values = first["rewards"]
    assert torch.equal(first["obs"]["frame"], values.long())
    assert torch.equal(first["next_obs"]["frame"], values.long() + 1)
    assert torch.equal(first["obs"]["memory"], values.view(-1, 1, 1).expand(-1, 2, 3))
    assert torch.equal(first["actions"], values.long() % 3)
    assert first["obs"]["memory"].dtype == torch.float32
    assert first["obs"]["frame"].dtype == torch.int64


def test_float_observations_are_stored_in_float16():
    buffer = ReplayBuffer(2, SPEC)
    obs, actions, rewards, next_obs, dones = transitions([0])
    obs["history"] = torch.full((1, 4), 1.0 / 3.0)
    buffer.add(obs, actions, rewards, next_obs, dones)
    assert buffer.state_dict()["obs"]["history"].dtype == torch.float16
    sampled = buffer.sample(1, torch.Generator().manual_seed(0))["obs"]["history"]
    assert sampled.dtype == torch.float32
    assert torch.equal(sampled, torch.full((1, 4), 1.0 / 3.0).half().float())


def test_state_dict_round_trip_resumes_exactly():
    buffer = ReplayBuffer(5, SPEC)
    buffer.add(*transitions([0, 1, 2, 3]))
    buffer.add(*transitions([4, 5]))  # wrapped: position 1
    blob = io.BytesIO()
    torch.save(buffer.state_dict(), blob)
    blob.seek(0)
    restored = ReplayBuffer(5, SPEC)
    restored.load_state_dict(torch.load(blob))
    assert (restored.position, len(restored)) == (buffer.position, len(buffer)) == (1, 5)
    # Identical future: same writes land in the same slots, same seeded samples come out.
    for b in (buffer, restored):
        b.add(*transitions([6, 7]))
    a = buffer.sample(16, torch.Generator().manual_seed(3))
    b = restored.sample(16, torch.Generator().manual_seed(3))
    for key in ("indices", "actions", "rewards", "dones"):
        assert torch.equal(a[key], b[key])
    for name in SPEC:
        assert torch.equal(a["obs"][name], b["obs"][name])
        assert torch.equal(a["next_obs"][name], b["next_obs"][name])


def test_partial_buffer_round_trip_and_mismatch():
    buffer = ReplayBuffer(5, SPEC)
    buffer.add(*transitions([0, 1]))
    state = buffer.state_dict()
    assert state["rewards"].shape == (2,)  # only filled slots are saved
    restored = ReplayBuffer(5, SPEC)
    restored.load_state_dict(state)
    assert (restored.position, len(restored)) == (2, 2)
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(6, SPEC).load_state_dict(state)


def test_sampling_empty_buffer_fails():
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(3, SPEC).sample(1, torch.Generator())


def test_bytes_per_transition_matches_storage():
    buffer = ReplayBuffer(5, SPEC)
    # 2 * (6 * 2 + 4 * 2 + 8) + 8 (action) + 4 (reward) + 1 (done) = 69
    assert buffer.bytes_per_transition == 69
    buffer.add(*transitions(range(5)))  # full: the state dict holds the whole storage
    state = buffer.state_dict()
    tensors = [*state["obs"].values(), *state["next_obs"].values(), state["actions"], state["rewards"], state["dones"]]
    assert sum(t.nbytes for t in tensors) == buffer.nbytes == 5 * 69


def test_paper_default_fits_in_4_gb():
    for windows, per_transition, fits in ((9, 737_329, 5825), (16, 737_357, 5824)):
        spec = {"memory": ((1280, 12, 12), torch.float32), "history": ((windows,), torch.float32)}
        # 2 * (1280*12*12*2 + windows*2) + 8 + 4 + 1, without allocating the 3.4 GiB buffer.
        assert ReplayBuffer.capacity_for_budget(per_transition, spec) == 1
        assert ReplayBuffer.capacity_for_budget(per_transition - 1, spec) == 0
        assert ReplayBuffer.capacity_for_budget(4 * 2**30, spec) == fits
        assert DEFAULT_CAPACITY * per_transition < 4e9
        # float32 storage would halve what fits.
        assert ReplayBuffer.capacity_for_budget(4 * 2**30, spec, storage_dtype=torch.float32) == 4 * 2**30 // (
            2 * (1280 * 144 * 4 + windows * 4) + 13
        )
