"""The one owner of the --weights / --arch rules (densecl eval and densecl correspond both use it)."""

from types import SimpleNamespace

import pytest
import torch

from densecl.errors import InputError
from densecl.evaluation.backbone import agreed_arch, file_sha256, load_source, load_weights, read_sources


def _files(**archs):
    return {name: SimpleNamespace(arch=arch) for name, arch in archs.items()}


def test_the_arch_comes_from_the_flag_or_the_files():
    assert agreed_arch(_files(a="resnet18", b="resnet18"), None, random=True) == "resnet18"
    assert agreed_arch(_files(a="resnet18"), "resnet18", random=False) == "resnet18"
    assert agreed_arch({}, "resnet34", random=True) == "resnet34"


def test_disagreements_are_refused_in_one_line():
    with pytest.raises(
        InputError, match=r"^'a' holds resnet18 weights but --arch is resnet50; drop --arch or set it to resnet18$"
    ):
        agreed_arch(_files(a="resnet18"), "resnet50", random=False)
    with pytest.raises(InputError, match=r"different architectures \('a' is resnet18, 'b' is resnet34\)"):
        agreed_arch(_files(a="resnet18", b="resnet34"), None, random=False)
    with pytest.raises(InputError, match=r"^--weights random needs --arch \(one of resnet18, .*resnet50"):
        agreed_arch({}, None, random=True)


def test_a_file_is_read_once_and_described(weights_file, tmp_path):
    read = read_sources([str(weights_file), "random", str(weights_file)])
    assert list(read) == [str(weights_file)]
    backbone, info = load_source(str(weights_file), read, "resnet18")
    assert info == {
        "source": str(weights_file),
        "sha256": file_sha256(weights_file),
        "arch": "resnet18",
        "format": "torchvision",
        "input": "3 channels of 8-bit photos in [0, 1], mean 0.485,0.456,0.406, std 0.229,0.224,0.225",
    }
    assert torch.equal(backbone.state_dict()["conv1.weight"], torch.load(weights_file)["conv1.weight"])
    with pytest.raises(InputError, match=f"weights file {tmp_path / 'gone.pt'} does not exist"):
        read_sources([str(tmp_path / "gone.pt")])


def test_random_weights_follow_the_global_seed():
    torch.manual_seed(4)
    a, info = load_weights("random", "resnet18")
    torch.manual_seed(4)
    b, _ = load_weights("random", "resnet18")
    assert {k: v for k, v in info.items() if k != "input"} == {
        "source": "random",
        "sha256": None,
        "arch": "resnet18",
        "format": "random",
    }
    assert info["input"].startswith("3 channels of 8-bit photos")
    assert torch.equal(a.state_dict()["conv1.weight"], b.state_dict()["conv1.weight"])
