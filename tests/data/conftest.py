import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Run the data tests on one intra-op thread, as DataLoader workers do: on a small shared
    machine, waking a thread pool for every tiny image op costs more than the op. Module
    scope, so the setting never leaks into other test directories."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
