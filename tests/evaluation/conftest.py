"""Tiny exported scenes (64 px) and a ResNet-18 weights file, shared by the evaluation tests."""

import pytest
import torch

from densecl.models.backbones import build_backbone
from densecl.scenes.export import export_scenes


@pytest.fixture(scope="session")
def scenes(tmp_path_factory):
    """``{format: root}`` for voc, coco and imagefolder: 12 train and 6 val scenes of 64 px."""
    root = tmp_path_factory.mktemp("scenes")
    return {
        fmt: export_scenes(root / fmt, fmt, n_train=12, n_val=6, size=64, seed=0).out
        for fmt in ("voc", "coco", "imagefolder")
    }


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory):
    """A torchvision-layout ResNet-18 state dict (what ``densecl export`` or torchvision users have)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "r18.pth"
    torch.save(build_backbone("resnet18").state_dict(), path)
    return path
