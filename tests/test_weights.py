"""Import: every checkpoint layout people bring gives the same torchvision-named backbone.

Each layout is built synthetically from one ResNet-18 state dict with the key
names of that layout. The momentum encoder's tensors differ from the query
encoder's, so taking the wrong encoder fails the comparison.
"""

from __future__ import annotations

import argparse
import pickle

import numpy as np
import pytest
import torch

from densecl import DenseCL
from densecl.errors import InputError
from densecl.models.backbones import BACKBONES, ResNetBackbone, build_backbone
from densecl.weights import (
    BackboneWeights,
    detectron2_to_torchvision,
    guess_arch,
    load_backbone,
    load_backbone_weights,
    resnet_shape,
    torchvision_to_detectron2,
)

ARCH = "resnet18"
FEAT, HIDDEN, QUEUE = 8, 16, 32


@pytest.fixture(scope="module")
def backbone() -> dict[str, torch.Tensor]:
    """A ResNet-18 state dict (torchvision names) with non-trivial BN statistics."""
    torch.manual_seed(0)
    state = build_backbone(ARCH).state_dict()
    for key, value in state.items():
        if key.endswith("running_mean") or key.endswith("bias"):
            value.normal_()
        elif key.endswith("running_var") or key.endswith("bn1.weight"):
            value.uniform_(0.5, 2.0)
        elif key.endswith("num_batches_tracked"):
            value.fill_(1234)
    return {k: v.clone() for k, v in state.items()}


def _prefixed(prefix: str, state: dict[str, torch.Tensor], shift: float = 0.0) -> dict[str, torch.Tensor]:
    """``state`` under ``prefix``; ``shift`` makes a distinguishable (momentum) copy."""
    return {prefix + k: (v + shift if v.is_floating_point() else v.clone()) for k, v in state.items()}


def _mlp(prefix: str, conv: bool = False, hidden: int = HIDDEN, out: int = FEAT, inp: int = 512) -> dict:
    """Two-layer head ``prefix{0,2}.{weight,bias}``: Linear, or 1x1 conv for the dense head."""
    kernel = (1, 1) if conv else ()
    return {
        f"{prefix}0.weight": torch.randn(hidden, inp, *kernel),
        f"{prefix}0.bias": torch.randn(hidden),
        f"{prefix}2.weight": torch.randn(out, hidden, *kernel),
        f"{prefix}2.bias": torch.randn(out),
    }


def _queue(name: str) -> dict:
    return {name: torch.randn(FEAT, QUEUE), f"{name}_ptr": torch.zeros(1, dtype=torch.long)}


def _with_fc(state: dict, fc: dict) -> dict:
    return {**state, **fc}


# --------------------------------------------------------------------------- layouts
# Each builder returns (checkpoint, source_format expected, keys expected to be dropped).


def densecl_checkpoint(bb):
    model = {
        **_prefixed("encoder.backbone.", bb),
        **_mlp("encoder.global_head.mlp."),
        **_mlp("encoder.dense_head.mlp.", conv=True),
        **_prefixed("momentum_encoder.backbone.", bb, shift=1.0),
        **_mlp("momentum_encoder.global_head.mlp."),
        **_mlp("momentum_encoder.dense_head.mlp.", conv=True),
        "global_queue.keys": torch.randn(FEAT, QUEUE),
        "global_queue.ptr": torch.zeros(1, dtype=torch.long),
        "dense_queue.keys": torch.randn(FEAT, QUEUE),
        "dense_queue.ptr": torch.zeros(1, dtype=torch.long),
    }
    checkpoint = {
        "format": "densecl",
        "version": 1,
        "config": {"arch": ARCH, "loss_lambda": 0.5},
        "model": model,
        "optimizer": {"state": {}, "param_groups": []},
        "step": 10,
        "epoch": 1,
    }
    return checkpoint, "densecl", {k for k in model if not k.startswith("encoder.backbone.")}


def densecl_model_only(bb):
    checkpoint, fmt, dropped = densecl_checkpoint(bb)
    return checkpoint["model"], fmt, dropped


def authors_full(bb):
    state = {
        **_prefixed("encoder_q.0.", bb),
        **_mlp("encoder_q.1.mlp."),
        **_mlp("encoder_q.1.mlp2.", conv=True),
        **_prefixed("encoder_k.0.", bb, shift=1.0),
        **_mlp("encoder_k.1.mlp."),
        **_mlp("encoder_k.1.mlp2.", conv=True),
        **_prefixed("backbone.", bb),  # the authors register the query backbone twice
        **_queue("queue"),
        **_queue("queue2"),
    }
    dropped = {k for k in state if not k.startswith("encoder_q.0.")}
    return {"meta": {"epoch": 200}, "state_dict": state}, "authors-full", dropped


def authors_backbone(bb):
    return {"state_dict": dict(bb)}, "authors-backbone", set()


def moco_v2(bb):
    state = {
        **_prefixed("module.encoder_q.", bb),
        **_mlp("module.encoder_q.fc.", hidden=512, out=128),
        **_prefixed("module.encoder_k.", bb, shift=1.0),
        **_mlp("module.encoder_k.fc.", hidden=512, out=128),
        "module.queue": torch.randn(128, QUEUE),
        "module.queue_ptr": torch.zeros(1, dtype=torch.long),
    }
    checkpoint = {"epoch": 200, "arch": "resnet18", "state_dict": state, "optimizer": {"state": {}, "param_groups": []}}
    return checkpoint, "moco", {k for k in state if not k.startswith("module.encoder_q.") or ".fc." in k}


def moco_v1_linear_fc(bb):
    fc = {"encoder_q.fc.weight": torch.randn(128, 512), "encoder_q.fc.bias": torch.randn(128)}
    state = {
        **_prefixed("encoder_q.", bb),
        **fc,
        **_prefixed("encoder_k.", bb, shift=1.0),
        **{k.replace("_q", "_k"): v for k, v in fc.items()},
        "queue": torch.randn(128, QUEUE),
        "queue_ptr": torch.zeros(1, dtype=torch.long),
    }
    return {"state_dict": state}, "moco", {k for k in state if not k.startswith("encoder_q.")} | set(fc)


def moco_v3(bb):
    state = {
        **_prefixed("module.base_encoder.", bb),
        **_mlp("module.base_encoder.fc.", hidden=64, out=FEAT),
        **_prefixed("module.momentum_encoder.", bb, shift=1.0),
        **_mlp("module.momentum_encoder.fc.", hidden=64, out=FEAT),
        **_mlp("module.predictor.", hidden=64, out=FEAT, inp=FEAT),
    }
    return {"state_dict": state}, "moco", {k for k in state if not k.startswith("module.base_encoder.") or ".fc." in k}


def mmselfsup_0x_moco(bb):
    state = {
        **_prefixed("encoder_q.0.", bb),
        **_mlp("encoder_q.1.mlp."),
        **_prefixed("encoder_k.0.", bb, shift=1.0),
        **_mlp("encoder_k.1.mlp."),
        **_prefixed("backbone.", bb),
        **_queue("queue"),
    }
    state.update({"neck." + k[len("encoder_q.1.") :]: v for k, v in state.items() if k.startswith("encoder_q.1.")})
    return {"meta": {}, "state_dict": state}, "mmselfsup", {k for k in state if not k.startswith("encoder_q.0.")}


@pytest.mark.parametrize("momentum", ["encoder_k.module.", "momentum_encoder.module.", "target_net.module."])
def test_mmpretrain_densecl(backbone, momentum):
    state = {
        **_prefixed("backbone.", backbone),
        **_mlp("neck.mlp."),
        **_mlp("neck.mlp2.", conv=True),
        **_prefixed(momentum + "0.", backbone, shift=1.0),
        **_mlp(momentum + "1.mlp."),
        **_mlp(momentum + "1.mlp2.", conv=True),
        momentum.replace("module.", "steps"): torch.tensor(100),
        **_queue("queue"),
        **_queue("queue2"),
    }
    dropped = {k for k in state if not k.startswith("backbone.")}
    _check(backbone, {"meta": {"epoch": 200}, "state_dict": state}, "mmselfsup", dropped)


def mmlab_classifier(bb):
    state = {**_prefixed("backbone.", bb), "head.fc.weight": torch.randn(10, 512), "head.fc.bias": torch.randn(10)}
    return {"meta": {}, "state_dict": state}, "mmlab", {"head.fc.weight", "head.fc.bias"}


def torchvision_flat(bb):
    fc = {"fc.weight": torch.randn(1000, 512), "fc.bias": torch.randn(1000)}
    return _with_fc(bb, fc), "torchvision", set(fc)


def timm_train_checkpoint(bb):
    fc = {"fc.weight": torch.randn(1000, 512), "fc.bias": torch.randn(1000)}
    checkpoint = {
        "epoch": 10,
        "arch": ARCH,
        "version": 2,
        "state_dict": _with_fc(bb, fc),
        "args": argparse.Namespace(lr=0.1),  # not weights-only loadable
    }
    return checkpoint, "timm", set(fc)


def mmlab_export(bb):
    return {"state_dict": dict(bb), "meta": {"arch": ARCH}}, "mmlab", set()


def detectron2_pickle(bb):
    model = {torchvision_to_detectron2(k): v.numpy() for k, v in bb.items() if not k.endswith("num_batches_tracked")}
    return {"model": model, "__author__": "test", "matching_heuristics": True}, "detectron2", set()


LAYOUTS = [
    densecl_checkpoint,
    densecl_model_only,
    authors_full,
    authors_backbone,
    moco_v2,
    moco_v1_linear_fc,
    moco_v3,
    mmselfsup_0x_moco,
    mmlab_classifier,
    torchvision_flat,
    timm_train_checkpoint,
    mmlab_export,
    detectron2_pickle,
]


def _check(backbone, checkpoint, fmt, dropped):
    weights = load_backbone_weights(checkpoint)
    assert weights.source_format == fmt
    assert weights.arch == ARCH
    assert set(weights.dropped) == dropped
    assert weights.state_dict.keys() == backbone.keys()
    for key, expected in backbone.items():
        got = weights.state_dict[key]
        if fmt == "detectron2" and key.endswith("num_batches_tracked"):
            expected = torch.tensor(0)  # detectron2 keeps no counter; it is filled with 0
        assert got.dtype == expected.dtype and torch.equal(got, expected), key


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda f: f.__name__)
def test_layout_converts_to_the_same_backbone(backbone, layout):
    _check(backbone, *layout(backbone))


def test_densecl_model_state_dict():
    """A real DenseCL's state: the query backbone comes out, every other key is listed as dropped."""
    model = DenseCL(arch=ARCH, hidden_dim=HIDDEN, out_dim=FEAT, queue_len=QUEUE)
    with torch.no_grad():
        model.momentum_encoder.backbone.conv1.weight.add_(1.0)  # the encoders differ: taking the wrong one fails
    state = model.state_dict()
    weights = load_backbone_weights({"format": "densecl", "version": 1, "config": {"arch": ARCH}, "model": state})
    assert weights.arch == ARCH and weights.source_format == "densecl"
    assert weights.state_dict.keys() == model.backbone.state_dict().keys()
    for key, value in weights.state_dict.items():
        assert torch.equal(value, state["encoder.backbone." + key]), key
    assert set(weights.dropped) == {k for k in state if not k.startswith("encoder.backbone.")}
    assert {"global_queue.keys", "dense_queue.ptr", "momentum_encoder.backbone.conv1.weight"} <= set(weights.dropped)


def _authors_with_neck_and_head(model: DenseCL) -> dict[str, torch.Tensor]:
    """The model in the authors' layout plus an mmselfsup-style ``neck.*`` copy and a ``head.*`` entry."""
    state = model.authors_state_dict()
    state.update(
        {"neck." + k[len("encoder_q.1.") :]: v.clone() for k, v in state.items() if k.startswith("encoder_q.1.")}
    )
    state["head.criterion.weight"] = torch.ones(3)  # the authors' head has no parameters: nothing here is used
    return state


def test_neck_copy_and_head_are_accepted_by_both_authors_loaders():
    """One rule for the strict model loader and the backbone importer: neck.* must copy encoder_q.1.*, head.* is
    ignored.
    """
    torch.manual_seed(1)
    source = DenseCL(arch=ARCH, hidden_dim=HIDDEN, out_dim=FEAT, queue_len=QUEUE)
    state = _authors_with_neck_and_head(source)
    assert sum(k.startswith("neck.") for k in state) == 8  # two heads x two layers x (weight, bias)
    model = DenseCL(arch=ARCH, hidden_dim=HIDDEN, out_dim=FEAT, queue_len=QUEUE)
    model.load_authors_state_dict(state)
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    weights = load_backbone_weights({"state_dict": state})
    assert weights.source_format == "authors-full"
    assert {k for k in weights.dropped if k.startswith(("neck.", "head."))} == {
        k for k in state if k.startswith(("neck.", "head."))
    }
    for key, value in weights.state_dict.items():
        assert torch.equal(value, state["encoder_q.0." + key]), key


def test_neck_that_is_not_a_copy_is_refused_by_both_authors_loaders():
    state = _authors_with_neck_and_head(DenseCL(arch=ARCH, hidden_dim=HIDDEN, out_dim=FEAT, queue_len=QUEUE))
    state["neck.mlp2.0.bias"] = state["neck.mlp2.0.bias"] + 1
    message = r"neck\.mlp2\.0\.bias should be a copy of encoder_q\.1\.mlp2\.0\.bias but is not"
    with pytest.raises(InputError, match=message):
        DenseCL(arch=ARCH, hidden_dim=HIDDEN, out_dim=FEAT, queue_len=QUEUE).load_authors_state_dict(state)
    with pytest.raises(InputError, match=message):
        load_backbone_weights(state)


def test_ddp_prefix_applies_to_the_copies_too(backbone):
    checkpoint, _, dropped = authors_full(backbone)
    state = {"module." + k: v for k, v in checkpoint["state_dict"].items()}
    _check(backbone, state, "authors-full", {"module." + k for k in dropped})
    state["module.backbone.layer1.0.bn1.running_mean"] = state["module.backbone.layer1.0.bn1.running_mean"] * 2
    with pytest.raises(
        InputError, match=r"module\.backbone\.layer1\.0\.bn1\.running_mean should be a copy of module\.encoder_q\.0\."
    ):
        load_backbone_weights(state)


# --------------------------------------------------------------------------- files


@pytest.mark.slow
def test_files_in_every_container(backbone, tmp_path):
    checkpoint, _, _ = densecl_checkpoint(backbone)
    checkpoint["rng"] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}  # numpy: not weights-only
    torch.save(checkpoint, tmp_path / "densecl.pth")
    timm_checkpoint, _, _ = timm_train_checkpoint(backbone)
    torch.save(timm_checkpoint, tmp_path / "model_best.pth.tar")  # argparse.Namespace inside
    with open(tmp_path / "d2.pkl", "wb") as f:
        pickle.dump(detectron2_pickle(backbone)[0], f, protocol=5)  # arrays by _frombuffer, not _reconstruct
    from safetensors.torch import save_file

    save_file(backbone, str(tmp_path / "flat.safetensors"))
    expect = {
        "densecl.pth": "densecl",
        "model_best.pth.tar": "timm",
        "d2.pkl": "detectron2",
        "flat.safetensors": "torchvision",
    }
    for name, fmt in expect.items():
        weights = load_backbone_weights(tmp_path / name)
        assert (weights.source_format, weights.arch) == (fmt, ARCH)
        assert torch.equal(weights.state_dict["layer4.1.bn2.running_var"], backbone["layer4.1.bn2.running_var"])


CALLS = []


def _record(*args):
    CALLS.append(args)
    return args


class _Sneaky:
    def __reduce__(self):
        return (_record, ("ran",))


def test_pickled_objects_become_inert_placeholders(backbone, tmp_path):
    """mmengine checkpoints pickle their message hub; reading must not run code from the file."""
    torch.save({"meta": {"hub": _Sneaky()}, "state_dict": _prefixed("backbone.", backbone)}, tmp_path / "mm.pth")
    CALLS.clear()
    weights = load_backbone_weights(tmp_path / "mm.pth")
    assert CALLS == []
    assert weights.source_format == "mmlab" and weights.arch == ARCH


@pytest.mark.slow
def test_load_backbone_is_strict_and_equal(backbone, tmp_path):
    torch.save(densecl_checkpoint(backbone)[0], tmp_path / "ck.pth")
    model = load_backbone(tmp_path / "ck.pth")
    assert isinstance(model, ResNetBackbone)
    assert all(torch.equal(v, backbone[k]) for k, v in model.state_dict().items())
    assert isinstance(load_backbone("random", arch=ARCH), ResNetBackbone)
    weights = load_backbone_weights(tmp_path / "ck.pth")  # read once, then build from the result
    assert all(torch.equal(v, backbone[k]) for k, v in load_backbone(weights).state_dict().items())


# --------------------------------------------------------------------------- architectures


@pytest.fixture(scope="module")
def meta_states() -> dict[str, dict[str, torch.Tensor]]:
    """Every registered backbone's state dict on the meta device: names and shapes, no memory."""
    with torch.device("meta"):
        return {arch: build_backbone(arch).state_dict() for arch in BACKBONES}


def test_guess_arch_for_every_registered_backbone(meta_states):
    for arch, state in meta_states.items():
        assert guess_arch(state) == arch


@pytest.mark.parametrize(
    "arch, shape",
    [
        ("resnet18", (18, False, 1, 64)),
        ("resnet34", (34, False, 1, 64)),
        ("resnet50", (50, True, 1, 64)),
        ("resnet101", (101, True, 1, 64)),
        ("resnet152", (152, True, 1, 64)),
        ("resnext50_32x4d", (50, True, 32, 4)),
        ("resnext101_32x8d", (101, True, 32, 8)),
        ("wide_resnet50_2", (50, True, 1, 128)),
    ],
)
def test_resnet_shape(meta_states, arch, shape):
    assert tuple(resnet_shape(meta_states[arch])) == shape


@pytest.mark.parametrize(
    "torchvision, detectron2",
    [
        ("conv1.weight", "stem.conv1.weight"),
        ("bn1.running_var", "stem.conv1.norm.running_var"),
        ("layer1.0.conv3.weight", "res2.0.conv3.weight"),
        ("layer2.1.bn2.bias", "res3.1.conv2.norm.bias"),
        ("layer3.0.downsample.0.weight", "res4.0.shortcut.weight"),
        ("layer4.0.downsample.1.running_mean", "res5.0.shortcut.norm.running_mean"),
        ("layer4.2.bn3.num_batches_tracked", None),
        ("fc.weight", None),
    ],
)
def test_detectron2_names_by_hand(torchvision, detectron2):
    assert torchvision_to_detectron2(torchvision) == detectron2
    if detectron2 is not None:
        assert detectron2_to_torchvision(detectron2) == torchvision


def test_detectron2_names_invert_for_every_arch(meta_states):
    for state in meta_states.values():
        names = [k for k in state if not k.endswith("num_batches_tracked")]
        d2 = [torchvision_to_detectron2(k) for k in names]
        assert None not in d2 and len(set(d2)) == len(d2)
        assert [detectron2_to_torchvision(k) for k in d2] == names


# --------------------------------------------------------------------------- wrong input


def test_text_file_renamed_pth(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights\n")
    with pytest.raises(InputError, match=r"cannot read checkpoint '.*notes\.pth'.*re-download or re-export"):
        load_backbone_weights(path)


def test_truncated_pth(backbone, tmp_path):
    path = tmp_path / "cut.pth"
    torch.save(backbone, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError, match=r"cut\.pth': it is truncated or not a PyTorch"):
        load_backbone_weights(path)


def test_truncated_safetensors_and_missing_file(backbone, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "cut.safetensors"
    save_file(backbone, str(path))
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(InputError, match="truncated or not a safetensors file"):
        load_backbone_weights(path)
    with pytest.raises(InputError, match="does not exist"):
        load_backbone_weights(tmp_path / "nowhere.pth")


def test_state_dict_of_another_network(tmp_path):
    nn = torch.nn
    other = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8, 2))
    torch.save(other.state_dict(), tmp_path / "other.pth")
    with pytest.raises(InputError, match=r"no ResNet checkpoint .*encoder_q\.0\.conv1\.weight.*first keys: 0\.weight"):
        load_backbone_weights(tmp_path / "other.pth")


def test_resnet_with_foreign_or_missing_keys(backbone):
    with pytest.raises(InputError, match=r"fits no supported ResNet.*resnet18, 1 unexpected \(layer1\.0\.se\.fc\."):
        load_backbone_weights({**backbone, "layer1.0.se.fc.weight": torch.zeros(4, 64)})
    partial = {k: v for k, v in backbone.items() if not k.startswith("layer4.1.")}
    with pytest.raises(InputError, match=r"12 keys missing \(layer4\.1\.conv1\.weight"):
        load_backbone_weights(partial)


def test_unplaced_keys_are_named(backbone):
    checkpoint, _, _ = densecl_checkpoint(backbone)
    checkpoint["model"]["encoder.extra_head.weight"] = torch.zeros(1)
    with pytest.raises(InputError, match=r"densecl checkpoint but 1 keys fit nowhere: encoder\.extra_head\.weight"):
        load_backbone_weights(checkpoint)


def test_disagreeing_duplicate_backbone(backbone):
    checkpoint, _, _ = authors_full(backbone)
    checkpoint["state_dict"]["backbone.conv1.weight"] = checkpoint["state_dict"]["backbone.conv1.weight"] + 1
    with pytest.raises(InputError, match=r"backbone\.conv1\.weight should be a copy of encoder_q\.0\.conv1\.weight"):
        load_backbone_weights(checkpoint)


def test_config_arch_must_fit(backbone):
    checkpoint, _, _ = densecl_checkpoint(backbone)
    checkpoint["config"]["arch"] = "resnet34"
    with pytest.raises(InputError, match=r"config says resnet34 but 96 keys missing"):
        load_backbone_weights(checkpoint)


def test_load_backbone_arguments(backbone):
    with pytest.raises(InputError, match="holds resnet18 weights but resnet50 was asked for"):
        load_backbone(dict(backbone), arch="resnet50")
    with pytest.raises(InputError, match="needs an architecture"):
        load_backbone("random")
    with pytest.raises(InputError, match="unknown backbone 'resnet7'"):
        load_backbone("random", arch="resnet7")
    hand_built = BackboneWeights(dict(backbone), None, "torchvision")
    with pytest.raises(InputError, match="do not fit resnet34"):
        load_backbone(hand_built, arch="resnet34")
    with pytest.raises(InputError, match="do not say which architecture"):
        load_backbone(hand_built)
