"""``--device`` resolution, the one owner for pre-training, evaluation and correspondence."""

import pytest
import torch

from densecl.devices import device_type, resolve_device
from densecl.errors import InputError


@pytest.fixture
def gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_is_the_cpu_without_a_gpu(no_gpu):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("auto", local_rank=3) == torch.device("cpu")
    assert device_type("auto") == "cpu" and device_type("cpu") == "cpu"


def test_auto_and_cuda_follow_the_local_rank_on_a_gpu_machine(gpu):
    assert resolve_device("auto") == torch.device("cuda")  # torch's current device (pre-training sets it per rank)
    assert resolve_device("auto", local_rank=2) == torch.device("cuda", 2)
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda:3", local_rank=1) == torch.device("cuda", 3)  # an explicit index wins
    assert resolve_device("cpu", local_rank=1) == torch.device("cpu")
    assert device_type("auto") == "cuda" and device_type("cuda:1") == "cuda"


@pytest.mark.parametrize("requested", ["cuda", "cuda:1"])
def test_a_cuda_device_without_a_gpu_is_one_line_to_fix(no_gpu, requested):
    with pytest.raises(InputError) as e:
        resolve_device(requested)
    assert str(e.value) == f"--device {requested} asked for, but this machine has no CUDA GPU; pass --device cpu"


def test_a_string_that_names_no_device_is_an_input_error():
    with pytest.raises(InputError, match="--device gpu0 is not a device; use cpu, cuda, cuda:N or auto"):
        resolve_device("gpu0")
    assert str(resolve_device("cpu")) == "cpu"  # what evaluation configs and result files record
