import pytest
import torch


@pytest.fixture(autouse=True)
def _few_threads():
    """Tests use tiny tensors; more threads only add overhead on a 2-core CI machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
