import torch

from patchwork.nn import ActionHistory


def test_eq1_decays_adds_onehot_and_saturates_at_one():
    history = ActionHistory(num_actions=3, alpha=0.5)
    f = history.init(batch_size=2)
    f = history.update(f, torch.tensor([0, 2]))
    assert torch.equal(f, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    f = history.update(f, torch.tensor([1, 2]))
    # Stream 0: 0.5 * [1, 0, 0] + [0, 1, 0]; stream 1: min(0.5 + 1, 1) = 1.
    assert torch.equal(f, torch.tensor([[0.5, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    f = history.update(f, torch.tensor([1, 0]))
    assert torch.equal(f, torch.tensor([[0.25, 1.0, 0.0], [1.0, 0.0, 0.5]]))
