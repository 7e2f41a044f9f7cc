import torch

from patchwork.nn import StreamState


def test_reset_zeroes_only_selected_streams_and_leaves_the_original():
    state = StreamState({"a": torch.ones(3, 2, 4, 4), "b": torch.full((3, 5), 2.0)})
    reset = state.reset(torch.tensor([False, True, False]))
    assert reset["a"][1].abs().sum() == 0 and reset["b"][1].abs().sum() == 0
    assert torch.equal(reset["a"][[0, 2]], state["a"][[0, 2]])
    assert torch.equal(reset["b"][[0, 2]], state["b"][[0, 2]])
    assert state["a"].min() == 1


def test_state_round_trips_through_torch_save(tmp_path):
    state = StreamState({"a": torch.randn(2, 3)})
    torch.save(state, tmp_path / "s.pt")
    loaded = torch.load(tmp_path / "s.pt", weights_only=False)
    assert isinstance(loaded, StreamState) and torch.equal(loaded["a"], state["a"])
    assert loaded.batch_size == 2
