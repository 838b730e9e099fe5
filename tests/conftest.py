import os

import pytest
import torch


def pytest_configure(config):
    """Under pytest-xdist (``make test``: a process per core) the processes a test starts (the CLI, torchrun) get
    their share of the cores: torch's default of one thread per core in each would oversubscribe them several
    times over, and its spinning threads slow everything down instead of speeding it up."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))


@pytest.fixture(autouse=True)
def _few_threads():
    """Tests use tiny tensors; more threads only add overhead on a 2-core CI machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
