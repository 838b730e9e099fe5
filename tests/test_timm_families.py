"""One model of each tested timm family through the whole project: train, resume, export, load in timm, evaluate.

Per family, at 64 px with batch 4 in groups of 2 (ConvNeXt has no batch norm:
the start line says so): an epoch of two steps, saved and resumed for a
second, equals two epochs in one run; ``densecl export`` writes timm and safetensors files that
timm's own model (pruned as the backbone is) loads strictly and timm's file
route loads with only the head left fresh, giving the backbone's feature maps
exactly; a frozen kNN probe runs on the exported scenes.
"""

import json

import pytest
import torch

from densecl import checkpoint
from densecl.cli import main
from densecl.config import TIMM_TESTED
from densecl.errors import InputError
from densecl.models.timm_backbone import LEVELS
from densecl.scenes.export import export_scenes
from densecl.weights import load_backbone, load_backbone_weights

timm = pytest.importorskip("timm")

TINY = [
    "--hidden-dim", "16", "--out-dim", "8", "--queue-len", "8", "--batch-size", "4", "--bn-group-size", "2",
    "--crop-size", "64", "--scenes-size", "64", "--scenes-length", "8", "--workers", "0", "--precision", "fp32",
    "--log-every", "1", "--epochs", "2", "--deterministic", "true",
]  # fmt: skip


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    return export_scenes(root / "imagefolder", "imagefolder", n_train=12, n_val=6, size=64, seed=0).out


@pytest.mark.parametrize("arch", TIMM_TESTED)
@pytest.mark.slow
def test_a_family_trains_resumes_exports_and_evaluates(arch, scenes, tmp_path, capsys):
    name = arch.removeprefix("timm/")
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    assert main(["pretrain", "--arch", arch, *TINY, "--output-dir", str(straight)]) == 0
    start = capsys.readouterr().out
    if name == "convnext_atto":
        assert (
            "no batch norm in timm/convnext_atto, so keys need no shuffle and are not shuffled; --bn-group-size 2 "
            "has nothing to group" in start
        )
    else:
        assert "batch norm over 2 groups of 2 per process" in start
    # stopped at the first epoch's end: resumed mid-epoch, a new data iterator draws from torch's generator before
    # the key shuffle does, so runs that shuffle keys (groups, several ranks) resume exactly at epoch ends only
    assert main(["pretrain", "--arch", arch, *TINY, "--output-dir", str(halves), "--max-iters", "2"]) == 0
    assert main(["pretrain", "--resume", str(halves / "checkpoint.pt"), "--max-iters", "none"]) == 0
    a, b = checkpoint.load(straight / "checkpoint.pt"), checkpoint.load(halves / "checkpoint.pt")
    assert a.step == b.step == 4 and a.config["arch"] == arch
    assert all(torch.equal(value, b.model[key]) for key, value in a.model.items())  # equals an uninterrupted run

    ckpt = straight / "checkpoint.pt"
    backbone = load_backbone(ckpt).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = backbone.forward_stages(x)
    for fmt, suffix in (("timm", ".pth"), ("safetensors", ".safetensors")):
        out = tmp_path / f"{name}{suffix}"
        assert main(["export", str(ckpt), "--format", fmt, "--out", str(out)]) == 0
        assert f'timm.create_model("{name}", pretrained=True, features_only=True' in capsys.readouterr().out
        if fmt == "safetensors":  # the header names the model
            assert load_backbone_weights(out).arch == arch
        else:  # a plain state dict does not: it is read as the model named
            with pytest.raises(InputError, match=r"for a timm model name it \(--arch timm/<name>\)"):
                load_backbone_weights(out)
        stored = load_backbone_weights(out, arch).state_dict
        _loads_in_timm(name, out, stored, backbone, x, ours)

    assert main(["eval", "knn", "--weights", str(ckpt), "--data", str(scenes), "--image-size", "0", "--workers", "0",
                 "--k", "3", "--device", "cpu", "--out", str(tmp_path / "knn.json")]) == 0  # fmt: skip
    record = json.loads((tmp_path / "knn.json").read_text())
    assert record["weights"]["arch"] == arch and 0 <= record["metrics"]["top1"]["mean"] <= 100


def _loads_in_timm(name, path, stored, backbone, x, ours) -> None:
    """timm's model pruned as the backbone is loads the file strictly; timm's file route loads every tensor of it,
    starting only the head fresh, and its features_only model gives the backbone's feature maps."""
    pruned = timm.create_model(name, pretrained=False)
    pruned.prune_intermediate_layers(indices=LEVELS, prune_norm=True, prune_head=True)
    pruned.load_state_dict(stored, strict=True)

    features = timm.create_model(name, pretrained=True, features_only=True, pretrained_cfg_overlay=dict(file=str(path)))
    with torch.no_grad():
        theirs = features.eval()(x)[-LEVELS:]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ours, theirs))

    classifier = timm.create_model(
        name, pretrained=True, num_classes=3, pretrained_cfg_overlay=dict(file=str(path), num_classes=0)
    )
    loaded = classifier.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in stored.items())  # every tensor of the file landed
    missing, unexpected = timm.create_model(name, num_classes=3).load_state_dict(stored, strict=False)
    counters = {k for k in backbone.head_keys if k.endswith("num_batches_tracked")}  # torch fills these with 0
    assert not unexpected and set(missing) == backbone.head_keys - counters  # only the head is left fresh


@pytest.mark.parametrize(
    "arch, extra, message",
    [
        ("timm/convnxt_atto", [], "timm has no model 'convnxt_atto'; the closest: timm/convnext_atto"),
        ("timm/vit_tiny_patch16_224", [], "timm/vit_tiny_patch16_224 has no spatial feature pyramid"),
        ("timm/convnext_atto", ["--crop-size", "48"], "gives timm/convnext_atto a 1x1 C5 grid; DenseCL needs at least"),
    ],
)
def test_bad_timm_input_is_one_line_before_anything_is_built(tmp_path, capsys, arch, extra, message):
    run = ["pretrain", "--arch", arch, *TINY, *extra, "--output-dir", str(tmp_path), "--data", str(tmp_path / "none")]
    assert main(run) == 2  # the data path does not exist either: the model's check comes first
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "checkpoint.pt").exists()


def test_pretrain_help_names_the_timm_families(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "any timm CNN as timm/<name>" in help_text and all(arch in help_text for arch in TIMM_TESTED)
