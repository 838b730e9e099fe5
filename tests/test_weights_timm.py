"""timm weights in: --init, eval's --arch and densecl's own checkpoints of a timm backbone, checked against timm.

The reference for the first convolution on other inputs is timm itself: an
RGB file loaded by ``timm.create_model(..., in_chans=N, pretrained=True)``
must give the stem ``--init`` gives.
"""

import pytest
import torch

from densecl.cli import main
from densecl.errors import InputError
from densecl.evaluation.backbone import load_weights
from densecl.models.densecl import DenseCL
from densecl.train import _init_backbone
from densecl.weights import load_backbone_weights

timm = pytest.importorskip("timm")

ARCH, NAME, STEM = "timm/resnet18d", "resnet18d", "conv1.0.weight"


@pytest.fixture(scope="module")
def timm_file(tmp_path_factory):
    """A timm ``resnet18d`` state dict as timm saves it, classifier included, and the model."""
    torch.manual_seed(3)
    model = timm.create_model(NAME, pretrained=False)
    path = tmp_path_factory.mktemp("timm") / "resnet18d.pth"
    torch.save(model.state_dict(), path)
    return path, model


def tiny(arch=ARCH, **kwargs) -> DenseCL:
    return DenseCL(arch, hidden_dim=16, out_dim=8, queue_len=8, **kwargs)


def test_init_reads_a_timm_file_into_both_backbones_and_drops_the_head(timm_file, capsys):
    path, source = timm_file
    model = tiny()
    _init_backbone(model, str(path), print)
    want = source.state_dict()
    for encoder in (model.encoder, model.momentum_encoder):
        got = encoder.backbone.library_state_dict()
        assert got.keys() == want.keys() - {"fc.weight", "fc.bias"}
        assert all(torch.equal(v, want[k]) for k, v in got.items())
    weights = load_backbone_weights(path, ARCH)
    assert weights.arch == ARCH and weights.source_format == "timm" and weights.dropped == ("fc.weight", "fc.bias")
    assert weights.stem == STEM and weights.in_channels == 3
    assert capsys.readouterr().out == ""  # nothing adapted


@pytest.mark.parametrize("channels", [1, 5])
def test_init_adapts_the_first_convolution_as_timm_loads_it(timm_file, tmp_path, capsys, channels):
    path, _ = timm_file
    model = tiny(in_channels=channels)
    _init_backbone(model, str(path), print)
    assert f"the first convolution ({STEM}) takes 3 channels, this model {channels}" in capsys.readouterr().out
    reference = timm.create_model(
        NAME, pretrained=True, in_chans=channels, num_classes=0, pretrained_cfg_overlay=dict(file=str(path))
    )
    ours = model.encoder.backbone.library_state_dict()
    for key, value in reference.state_dict().items():
        assert torch.allclose(ours[key], value, atol=1e-7), key  # the stem as timm adapts it, the rest as stored


def test_torchvision_weights_start_timm_resnet18(tmp_path):
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.resnet18()
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    model = tiny("timm/resnet18")
    _init_backbone(model, str(tmp_path / "tv.pth"), print)  # timm's ResNet names are torchvision's
    assert torch.equal(model.encoder.backbone.model.layer4[1].conv2.weight, tv.layer4[1].conv2.weight)


def test_a_file_of_another_architecture_is_one_line_naming_the_model(timm_file, tmp_path, capsys):
    path, _ = timm_file
    with pytest.raises(InputError, match=r"does not fit timm/regnetx_002: \d+ keys missing .*--arch timm/<name>"):
        load_backbone_weights(path, "timm/regnetx_002")
    common = ["--arch", "timm/regnetx_002", "--hidden-dim", "16", "--out-dim", "8", "--batch-size", "4"]
    common += ["--queue-len", "8", "--crop-size", "64", "--scenes-size", "64", "--scenes-length", "8", "--workers", "0"]
    run = ["pretrain", *common, "--output-dir", str(tmp_path / "run"), "--init", str(path)]
    assert main(run) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "does not fit timm/regnetx_002" in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_eval_reads_a_timm_file_as_the_model_named_by_arch(timm_file):
    path, source = timm_file
    backbone, info = load_weights(str(path), ARCH)
    assert info["arch"] == ARCH and info["format"] == "timm"
    assert torch.equal(backbone.model.conv1[0].weight, source.conv1[0].weight)
    with pytest.raises(InputError, match=r"no ResNet checkpoint .*or for a timm model name it \(--arch timm/<name>\)"):
        load_weights(str(path), None)


def test_a_densecl_checkpoint_of_a_timm_backbone_names_its_model(tmp_path):
    torch.manual_seed(1)
    model = tiny()
    with torch.no_grad():
        for p in model.momentum_encoder.parameters():
            p.add_(1.0)  # the momentum encoder differs: the reader must take the query backbone
    ddp = {"module." + k: v for k, v in model.state_dict().items()}
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": "densecl", "version": 1, "config": {"arch": ARCH}, "model": ddp, "step": 1}, path)
    weights = load_backbone_weights(path)
    assert weights.arch == ARCH and weights.source_format == "densecl" and weights.stem == STEM
    want = model.encoder.backbone.library_state_dict()
    assert weights.state_dict.keys() == want.keys()
    assert all(torch.equal(v, want[k]) for k, v in weights.state_dict.items())
    assert any(k.startswith("module.momentum_encoder.") for k in weights.dropped)
    assert any(k.startswith("module.global_queue.") for k in weights.dropped)
    with pytest.raises(
        InputError,
        match=r"holds timm/resnet18d weights but --arch is resnet18; drop --arch or set it to timm/resnet18d",
    ):
        load_weights(str(path), "resnet18")
