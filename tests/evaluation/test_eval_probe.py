"""The segmentation probe learns what informative features hold (an oracle backbone)."""

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from densecl.evaluation import seg_probe
from densecl.evaluation.features import assert_unchanged, frozen, snapshot

COLOURS = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)  # class k has colour k


class PooledPixels(nn.Module):
    """A 'backbone' whose stage k is the image average-pooled to stride 2^(k+2): colour = class."""

    stage_channels = (3, 3, 3, 3)
    out_channels = 3

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("unused", torch.zeros(1))  # something for the bit-identical check to compare

    def forward_stages(self, x):
        return [F.avg_pool2d(x, 2 ** (k + 2)) for k in range(4)]

    def forward(self, x):
        return self.forward_stages(x)[-1]


def _blocks_dataset(root, n_train=8, n_val=4, size=64, block=16):
    rng = np.random.default_rng(0)
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    (root / "classes.txt").write_text("background\nred\ngreen\nblue\n")
    for split, n in (("train", n_train), ("val", n_val)):
        ids = []
        for i in range(n):
            name = f"{split}{i}"
            cells = rng.integers(0, 4, size=(size // block, size // block))
            label = np.kron(cells, np.ones((block, block), np.int64)).astype(np.uint8)
            Image.fromarray(COLOURS[label]).save(root / "JPEGImages" / f"{name}.png")
            Image.fromarray(label).save(root / "SegmentationClass" / f"{name}.png")
            ids.append(name)
        (root / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")


def test_probe_reaches_high_miou_on_an_oracle_backbone(tmp_path):
    _blocks_dataset(tmp_path)
    config = seg_probe.SegProbeConfig(data=str(tmp_path), stages="c4", epochs=40, batch_size=4)
    backbone = PooledPixels().train()
    before = snapshot(backbone)
    result = seg_probe.evaluate(backbone, seg_probe.load_data(config), config, seeds=[0])
    assert result.per_seed[0]["mIoU"] > 80.0  # only the bilinear borders of the 16-px blocks may be wrong (87 here)
    assert_unchanged(backbone, before)  # the probe left the backbone bit-identical
    assert backbone.training  # and gave it back in the mode it came in


def test_frozen_really_freezes_and_restores_afterwards():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    model[0].bias.requires_grad_(False)  # the caller's own setting, to be given back as it was
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with frozen(model) as m:
        assert m is model
        assert not model.training and not model[1].training  # eval mode: BatchNorm uses its stored statistics
        assert not any(p.requires_grad for p in model.parameters())
        out = model(torch.randn(2, 3, 8, 8))
        assert not out.requires_grad  # nothing to backpropagate into the backbone
        for name, value in model.state_dict().items():  # a forward moved nothing, BN statistics included
            assert torch.equal(value, before[name]), name
    assert model.training and model[1].training
    assert model[0].weight.requires_grad and not model[0].bias.requires_grad
    assert model[1].num_batches_tracked.item() == 0  # no forward ever ran in train mode
