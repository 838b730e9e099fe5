"""Backbone weights in: every checkpoint layout people bring, as torchvision ResNet tensors.

One entry point serves ``densecl eval``, ``densecl export`` and
``densecl pretrain --init``::

    from densecl.weights import load_backbone, load_backbone_weights

    weights = load_backbone_weights("runs/r50/checkpoint.pth")
    weights.arch, weights.source_format, len(weights.dropped)   # 'resnet50', 'densecl', 226
    backbone = load_backbone("densecl_r50_imagenet_200ep.pth")   # strict load, arch guessed

Layouts recognised (``source_format``), by the keys of the state dict after a
DDP ``module.`` prefix is removed:

=================  ==========================================================
densecl            this project: ``encoder.backbone.*`` (the query encoder)
authors-full       the authors' DenseCL (and mmselfsup 0.x): ``encoder_q.0.*``
                   with the heads ``encoder_q.1.mlp(2).*``, ``encoder_k.*``, a
                   ``backbone.*`` copy of ``encoder_q.0.*`` and the queues
mmselfsup          mmselfsup 0.x MoCo (``encoder_q.0.*`` without a dense head),
                   or mmselfsup 1.x / mmpretrain DenseCL and MoCo: ``backbone.*``,
                   ``neck.*``, ``head.*``, a momentum copy under
                   ``encoder_k.`` / ``momentum_encoder.`` / ``target_net.`` /
                   ``momentum_backbone.``, ``queue*`` buffers
moco               MoCo v1/v2 ``encoder_q.*`` (a torchvision ResNet whose ``fc``
                   is the projection head) or MoCo v3 ``base_encoder.*``
detectron2         ``stem.conv1.*``, ``res2.0.conv1.norm.*``, ... (a pickle of
                   ``{"model": {name: ndarray}}``)
torchvision        plain torchvision names (``conv1``, ``bn1``, ``layer1.0.*``);
                   timm's ResNet names are the same, so a timm state dict reads
                   as ``torchvision`` too
authors-backbone   plain names under ``{"state_dict": ...}`` (the authors'
                   released backbones)
mmlab              plain names under ``{"state_dict": ..., "meta": ...}``
timm               plain names in a timm training checkpoint (``arch`` and
                   ``version`` beside ``state_dict``)
=================  ==========================================================

Every conversion checks, like nanoGPT's ``from_pretrained``, that each source
key was either placed or deliberately dropped (heads, classifier, queues,
momentum encoder), that duplicate copies of the query backbone agree, and that
the result has exactly the keys and shapes of one registered backbone. The
momentum encoder is dropped on purpose: the query encoder is the one that is
evaluated and transferred. Missing ``*.num_batches_tracked`` counters (detectron2
and pre-2018 torchvision files have none) are filled with 0; nothing else is
ever filled in.

Files are read without running code from them: ``torch.load(weights_only=True)``
first; checkpoints that also pickle arbitrary objects (mmengine's message hub,
timm's argparse namespace) are re-read with an unpickler that allows only
tensors, numpy arrays and plain containers and turns every other object into an
inert placeholder. ``.pkl`` files get that unpickler directly; ``.safetensors``
files go through the safetensors library.
"""

from __future__ import annotations

import functools
import os
import pickle
import re
import types
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from densecl.errors import InputError
from densecl.models.backbones import BACKBONES, ResNetBackbone, build_backbone

BN_STATS = ("weight", "bias", "running_mean", "running_var")


@dataclass(frozen=True)
class BackboneWeights:
    """The query backbone of some checkpoint, under torchvision ResNet names.

    Attributes:
        state_dict: torchvision ResNet names (``conv1.weight``,
            ``layer1.0.bn1.running_mean``, ...), no ``fc.*``; loads strictly into
            ``build_backbone(arch)``.
        arch: registry name (:data:`densecl.models.backbones.BACKBONES`) whose
            keys and shapes these tensors match exactly. ``load_backbone_weights``
            always sets it (it refuses tensors that fit no registered backbone);
            ``None`` only where a caller builds the object without knowing.
        source_format: the layout the tensors came from (see the module docs).
        dropped: source keys deliberately left out (heads, classifier, queues,
            momentum encoder, duplicate copies), as spelled in the source.
    """

    state_dict: dict[str, torch.Tensor]
    arch: str | None
    source_format: str
    dropped: tuple[str, ...] = field(default=())


def load_backbone_weights(source: str | os.PathLike | Mapping) -> BackboneWeights:
    """Reads a checkpoint in any known layout and returns its query backbone.

    Args:
        source: a file (``.pth``/``.pt``/``.tar``/``.pkl``/``.safetensors``) or
            an already loaded checkpoint dict.

    Raises:
        InputError: the file is unreadable or truncated, the layout is unknown,
            some keys fit nowhere, or the tensors fit no registered backbone.
    """
    if isinstance(source, Mapping):
        where, checkpoint = "the given checkpoint dict", source
    else:
        where, checkpoint = f"'{os.fspath(source)}'", read_checkpoint(source)
    state, container, config_arch = _unwrap(checkpoint, where)
    layout = _detect_layout(state, container, where)
    target, dropped = _convert(state, layout, where)
    _fill_num_batches_tracked(target)
    arch = _fit_arch(target, config_arch, layout.name, where)
    return BackboneWeights(state_dict=target, arch=arch, source_format=layout.name, dropped=dropped)


def load_backbone(
    source: str | os.PathLike | Mapping | BackboneWeights, arch: str | None = None
) -> ResNetBackbone:
    """Builds a backbone and loads ``source`` into it strictly.

    Args:
        source: anything :func:`load_backbone_weights` reads, its result (so a
            caller that also wants ``source_format`` reads the file once), or
            ``"random"`` for a randomly initialised backbone (then ``arch`` is
            required).
        arch: registry name; if given it must agree with the weights.
    """
    if isinstance(source, str) and source == "random":
        if arch is None:
            raise InputError("random initialisation needs an architecture; name one (e.g. resnet50)")
        return _build(arch)
    weights = source if isinstance(source, BackboneWeights) else load_backbone_weights(source)
    where = "the given weights" if isinstance(source, BackboneWeights) else _name(source)
    if arch is not None and weights.arch is not None and arch != weights.arch:
        raise InputError(
            f"{where} holds {weights.arch} weights but {arch} was asked for; "
            f"drop the architecture option or set it to {weights.arch}"
        )
    if (arch := weights.arch or arch) is None:
        raise InputError(f"{where} do not say which architecture they are; name one (e.g. resnet50)")
    backbone = _build(arch)
    try:
        backbone.load_state_dict(weights.state_dict, strict=True)
    except RuntimeError as e:  # only for hand-built BackboneWeights: the loader checked its own fit
        raise InputError(f"{where} do not fit {arch} ({_first_line(e)}); name the right architecture") from None
    return backbone


def guess_arch(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """The registered backbone with exactly these torchvision keys and shapes, or None."""
    shapes = _shapes(state_dict)
    for arch in BACKBONES:
        if _reference_shapes(arch) == shapes:
            return arch
    return None


class ResNetShape(NamedTuple):
    """What configs of other libraries need to rebuild the same ResNet."""

    depth: int  # 18, 34, 50, 101, 152
    bottleneck: bool
    groups: int  # 3x3-conv groups (32 for ResNeXt)
    width_per_group: int  # 3x3-conv channels per group in the first stage (64 for ResNet-50, 4 for ResNeXt-50 32x4d)


def resnet_shape(state_dict: Mapping[str, torch.Tensor]) -> ResNetShape:
    """Reads depth, block type and group width off torchvision-named tensors."""
    blocks = {tuple(k.split(".")[:2]) for k in state_dict if k.startswith("layer")}
    bottleneck = "layer1.0.conv3.weight" in state_dict
    conv2 = state_dict["layer1.0.conv2.weight"]  # width x width/groups x 3 x 3
    groups = conv2.shape[0] // conv2.shape[1]
    return ResNetShape(
        depth=len(blocks) * (3 if bottleneck else 2) + 2,
        bottleneck=bottleneck,
        groups=groups,
        width_per_group=conv2.shape[0] // groups,
    )


# --------------------------------------------------------------------------- reading files


def read_checkpoint(path: str | os.PathLike) -> Any:
    """Loads a checkpoint file without executing code from it.

    Raises:
        InputError: missing, unreadable, truncated or not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint '{path}' does not exist or is not a file; check the path")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    readers = [_read_torch, _read_pickle]
    if path.suffix == ".pkl" and not zipfile.is_zipfile(path):
        readers.reverse()
    errors = []
    for reader in readers:
        try:
            return reader(path)
        except Exception as e:  # noqa: BLE001 - any failure means "try the next reader"
            errors.append(_first_line(e))
    raise InputError(
        f"cannot read checkpoint '{path}': it is truncated or not a PyTorch, pickle or safetensors file "
        f"({errors[0]}); re-download or re-export it"
    )


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError as e:
        raise InputError(f"reading '{path}' needs the safetensors package; pip install safetensors") from e
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # noqa: BLE001 - the library raises its own error types
        raise InputError(
            f"cannot read safetensors file '{path}': it is truncated or not a safetensors file "
            f"({_first_line(e)}); re-download or re-export it"
        ) from e


def _read_torch(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # Pickled objects beyond tensors (mmengine's message hub, timm's args):
        # re-read with placeholders for them. Corrupt files fail here as well.
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_PLACEHOLDER_PICKLE)


def _read_pickle(path: Path) -> Any:
    with open(path, "rb") as f:
        return _PlaceholderUnpickler(f, encoding="latin1").load()


class _Placeholder:
    """Stands in for any pickled object outside the allow-list; runs none of its code."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Placeholder:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:  # dict-like objects are rebuilt item by item
        pass

    def append(self, value: Any) -> None:  # ... and list-like ones element by element
        pass

    def extend(self, values: Any) -> None:
        pass


@functools.cache
def _allowed_globals() -> dict[str, Any]:
    """What a checkpoint may name: torch's own weights-only allow-list plus numpy arrays."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = dict(_get_allowed_globals())
    except ImportError:  # private API moved: keep the essentials
        allowed = {"collections.OrderedDict": __import__("collections").OrderedDict}
    reconstruct = np.zeros(1).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # pickle protocol 5
    scalar = np.float32(0).__reduce__()[0]
    for core in ("numpy.core", "numpy._core"):  # numpy 1 and numpy 2 spellings
        allowed[f"{core}.multiarray._reconstruct"] = reconstruct
        allowed[f"{core}.multiarray.scalar"] = scalar
        allowed[f"{core}.numeric._frombuffer"] = frombuffer
    allowed["numpy.ndarray"] = np.ndarray
    allowed["numpy.dtype"] = np.dtype
    return allowed


class _PlaceholderUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return _allowed_globals().get(f"{module}.{name}", _Placeholder)


_PLACEHOLDER_PICKLE = types.SimpleNamespace(
    __name__="densecl_placeholder_pickle",
    Unpickler=_PlaceholderUnpickler,
    load=lambda f, **kwargs: _PlaceholderUnpickler(f, **kwargs).load(),
)


# --------------------------------------------------------------------------- containers


def _unwrap(checkpoint: Any, where: str) -> tuple[dict[str, torch.Tensor], str, str | None]:
    """Finds the state dict in a checkpoint.

    Returns:
        (state dict with tensor values, container kind, arch named by a densecl config or None)
    """
    if not isinstance(checkpoint, Mapping):
        raise InputError(
            f"{where} holds a {type(checkpoint).__name__}, not a checkpoint dict; pass a state dict or checkpoint file"
        )
    config_arch = None
    if checkpoint.get("format") == "densecl":
        version = checkpoint.get("version")
        if version != 1:
            raise InputError(
                f"{where} is a densecl checkpoint of version {version!r}; this densecl reads version 1, upgrade densecl"
            )
        config = checkpoint.get("config") or {}
        config_arch = config.get("arch") if isinstance(config, Mapping) else getattr(config, "arch", None)
        state, kind = checkpoint.get("model"), "densecl"
    elif isinstance(checkpoint.get("state_dict"), Mapping):
        state = checkpoint["state_dict"]
        kind = "meta" if "meta" in checkpoint else "timm" if {"arch", "version"} <= checkpoint.keys() else "state_dict"
    elif isinstance(checkpoint.get("model"), Mapping):
        state, kind = checkpoint["model"], "model"
    else:
        state, kind = checkpoint, "flat"
    if not isinstance(state, Mapping) or not state:
        raise InputError(f"{where} has no state dict (top-level keys: {_few(checkpoint)}); pass a model checkpoint")
    tensors, odd = {}, []
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            tensors[str(key)] = value
        elif isinstance(value, np.ndarray):
            tensors[str(key)] = torch.from_numpy(np.array(value))  # a writable copy
        else:
            odd.append(str(key))
    if odd:
        raise InputError(
            f"{where} is not a state dict of tensors: {_few(odd)} hold {type(state[odd[0]]).__name__}; "
            "pass a model checkpoint"
        )
    return tensors, kind, config_arch


# --------------------------------------------------------------------------- layouts


def _identity(name: str) -> str | None:
    return name


@dataclass(frozen=True)
class _Layout:
    """Where the query backbone lives in one checkpoint layout and what is left out on purpose."""

    name: str
    backbone: str  # prefix of the query backbone's keys
    dropped: tuple[str, ...] = ()  # prefixes deliberately dropped
    dropped_keys: tuple[str, ...] = ()  # exact keys deliberately dropped (queue buffers)
    copies: tuple[tuple[str, str], ...] = ()  # (prefix, prefix it must equal tensor for tensor)
    rename: Callable[[str], str | None] = _identity  # backbone name -> torchvision name; None: fits none


MOMENTUM_PREFIXES = ("encoder_k.", "momentum_encoder.", "target_net.", "momentum_backbone.", "momentum_neck.")
QUEUES = ("queue", "queue_ptr", "queue2", "queue2_ptr")

DENSECL = _Layout(
    "densecl",
    backbone="encoder.backbone.",
    dropped=("encoder.global_head.", "encoder.dense_head.", "momentum_encoder."),
    dropped_keys=("global_queue.keys", "global_queue.ptr", "dense_queue.keys", "dense_queue.ptr"),
)
AUTHORS_FULL = _Layout(
    "authors-full",
    backbone="encoder_q.0.",
    dropped=("encoder_q.1.", "encoder_k.", "head."),
    dropped_keys=QUEUES,
    copies=(("backbone.", "encoder_q.0."), ("neck.", "encoder_q.1.")),
)
MOCO = _Layout("moco", backbone="encoder_q.", dropped=("encoder_q.fc.", "encoder_k."), dropped_keys=QUEUES)
MOCO_V3 = _Layout("moco", backbone="base_encoder.", dropped=("base_encoder.fc.", "momentum_encoder.", "predictor."))
MMSELFSUP = _Layout(
    "mmselfsup",
    backbone="backbone.",
    dropped=("neck.", "head.", "data_preprocessor.", *MOMENTUM_PREFIXES),
    dropped_keys=QUEUES,
)
MMLAB = _Layout("mmlab", backbone="backbone.", dropped=("neck.", "head.", "data_preprocessor."))


def _detect_layout(state: Mapping[str, torch.Tensor], container: str, where: str) -> _Layout:
    keys = list(state)
    if keys and all(k.startswith("module.") for k in keys):  # DistributedDataParallel wrapper
        keys = [k[len("module."):] for k in keys]
        return _with_prefix(_detect_layout_of(keys, container, where), "module.")
    return _detect_layout_of(keys, container, where)


def _detect_layout_of(ordered_keys: list[str], container: str, where: str) -> _Layout:
    keys = set(ordered_keys)
    if "encoder.backbone.conv1.weight" in keys:
        return DENSECL
    if "encoder_q.0.conv1.weight" in keys:
        dense = "queue2" in keys or any(k.startswith("encoder_q.1.mlp2.") for k in keys)
        return AUTHORS_FULL if dense else replace(AUTHORS_FULL, name="mmselfsup")
    if "encoder_q.conv1.weight" in keys:
        return MOCO
    if "base_encoder.conv1.weight" in keys:
        return MOCO_V3
    if "backbone.conv1.weight" in keys:
        selfsup = any(k.startswith(MOMENTUM_PREFIXES) or k in QUEUES for k in keys)
        return MMSELFSUP if selfsup else MMLAB
    if "stem.conv1.weight" in keys:
        return _Layout("detectron2", backbone="", dropped=("fc.", "linear."), rename=detectron2_to_torchvision)
    if "conv1.weight" in keys:
        name = {"meta": "mmlab", "timm": "timm", "state_dict": "authors-backbone"}.get(container, "torchvision")
        return _Layout(name, backbone="", dropped=("fc.",))
    raise InputError(
        f"{where} is no ResNet checkpoint this reader knows: none of encoder.backbone.*, encoder_q.*, "
        f"base_encoder.*, backbone.*, stem.*/res2.* or conv1/layer1.* (first keys: {_few(ordered_keys)}); "
        "pass a DenseCL, MoCo, OpenMMLab, detectron2 or torchvision ResNet checkpoint"
    )


def _with_prefix(layout: _Layout, prefix: str) -> _Layout:
    return replace(
        layout,
        backbone=prefix + layout.backbone,
        dropped=tuple(prefix + p for p in layout.dropped),
        dropped_keys=tuple(prefix + k for k in layout.dropped_keys),
        copies=tuple((prefix + a, prefix + b) for a, b in layout.copies),
    )


def _convert(
    state: Mapping[str, torch.Tensor], layout: _Layout, where: str
) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """Places every source key: into the backbone, or deliberately dropped; nothing else."""
    target: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    dropped, unplaced = [], []
    for key, tensor in state.items():
        copy_of = next(((p, q) for p, q in layout.copies if key.startswith(p)), None)
        if copy_of is not None:
            original = copy_of[1] + key[len(copy_of[0]):]
            if original not in state or not _same(state[original], tensor):
                raise InputError(
                    f"{where}: {key} should be a copy of {original} but is not; "
                    "the file's two copies of the query encoder disagree, re-export it from the training run"
                )
            dropped.append(key)
        elif key in layout.dropped_keys or key.startswith(layout.dropped):
            dropped.append(key)
        elif key.startswith(layout.backbone) and (name := layout.rename(key[len(layout.backbone):])) is not None:
            if name in target:
                raise InputError(f"{where}: {origin[name]} and {key} both map to {name}; the file is inconsistent")
            target[name], origin[name] = tensor, key
        else:
            unplaced.append(key)
    if unplaced:
        raise InputError(
            f"{where} looks like a {layout.name} checkpoint but {len(unplaced)} keys fit nowhere: "
            f"{_few(unplaced)}; pass the ResNet checkpoint itself, not a different network"
        )
    return target, tuple(dropped)


def _fill_num_batches_tracked(state: dict[str, torch.Tensor]) -> None:
    for key in [k for k in state if k.endswith(".running_mean")]:
        counter = key[: -len("running_mean")] + "num_batches_tracked"
        state.setdefault(counter, torch.tensor(0, dtype=torch.long))


# --------------------------------------------------------------------------- architecture


def _fit_arch(target: Mapping[str, torch.Tensor], wanted: str | None, fmt: str, where: str) -> str:
    """The registered arch the tensors fit exactly; the config's arch, if one is named, must be it."""
    shapes = _shapes(target)
    if wanted is not None:
        if wanted not in BACKBONES:
            raise InputError(
                f"{where} names arch {wanted!r}, which is not one of {', '.join(BACKBONES)}; use a known arch"
            )
        if _reference_shapes(wanted) != shapes:
            raise InputError(
                f"{where}: its config says {wanted} but {_difference(wanted, shapes)}; the file is inconsistent"
            )
        return wanted
    arch = guess_arch(target)
    if arch is None:
        closest = max(BACKBONES, key=lambda a: _overlap(_reference_shapes(a), shapes))
        raise InputError(
            f"{where}: the {fmt} backbone fits no supported ResNet ({', '.join(BACKBONES)}); "
            f"against the closest, {closest}, {_difference(closest, shapes)}; pass a checkpoint of one of these"
        )
    return arch


@functools.cache
def _reference_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes only: nothing is allocated or initialised for real
        return _shapes(BACKBONES[arch]().state_dict())


def _shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def _overlap(reference: Mapping[str, tuple], shapes: Mapping[str, tuple]) -> int:
    return sum(1 for k, s in shapes.items() if reference.get(k) == s)


def _difference(arch: str, shapes: Mapping[str, tuple[int, ...]]) -> str:
    reference = _reference_shapes(arch)
    missing = [k for k in reference if k not in shapes]
    extra = [k for k in shapes if k not in reference]
    wrong = [f"{k} {shapes[k]} vs {reference[k]}" for k in reference if k in shapes and shapes[k] != reference[k]]
    parts = [
        f"{len(missing)} keys missing ({_few(missing)})" if missing else "",
        f"{len(extra)} unexpected ({_few(extra)})" if extra else "",
        f"{len(wrong)} of other shape ({_few(wrong, 2)})" if wrong else "",
    ]
    return ", ".join(p for p in parts if p)


def _build(arch: str) -> ResNetBackbone:
    try:
        return build_backbone(arch)
    except ValueError as e:
        raise InputError(f"{e}; pass one of the listed names") from e


# --------------------------------------------------------------------------- detectron2 names

_TV_STAGE = re.compile(r"layer([1-4])\.(\d+)\.(.+)")
_D2_STAGE = re.compile(r"res([2-5])\.(\d+)\.(.+)")
_TV_PART = re.compile(r"(?:conv(\d)\.weight|bn(\d)\.(\w+)|downsample\.0\.weight|downsample\.1\.(\w+))")
_D2_PART = re.compile(r"(?:conv(\d)\.weight|conv(\d)\.norm\.(\w+)|shortcut\.weight|shortcut\.norm\.(\w+))")


def torchvision_to_detectron2(name: str) -> str | None:
    """``layer1.0.bn2.weight`` -> ``res2.0.conv2.norm.weight``; None for keys detectron2 has no place for.

    torchvision's ``layerK`` is detectron2's ``res{K+1}``, ``bnN`` is
    ``convN.norm``, ``downsample.0/1`` is ``shortcut`` / ``shortcut.norm``, and
    the stem's ``conv1``/``bn1`` are ``stem.conv1`` / ``stem.conv1.norm``.
    ``num_batches_tracked`` has no detectron2 counterpart (returns None).
    """
    if name == "conv1.weight":
        return "stem.conv1.weight"
    if name.startswith("bn1.") and name[4:] in BN_STATS:
        return f"stem.conv1.norm.{name[4:]}"
    stage = _TV_STAGE.fullmatch(name)
    part = stage and _TV_PART.fullmatch(stage.group(3))
    if not part:
        return None
    prefix = f"res{int(stage.group(1)) + 1}.{stage.group(2)}"
    conv, bn, bn_stat, shortcut_stat = part.groups()
    if conv:
        return f"{prefix}.conv{conv}.weight"
    if bn:
        return f"{prefix}.conv{bn}.norm.{bn_stat}" if bn_stat in BN_STATS else None
    if shortcut_stat:
        return f"{prefix}.shortcut.norm.{shortcut_stat}" if shortcut_stat in BN_STATS else None
    return f"{prefix}.shortcut.weight"


def detectron2_to_torchvision(name: str) -> str | None:
    """The inverse of :func:`torchvision_to_detectron2`; None for names outside the ResNet."""
    if name == "stem.conv1.weight":
        return "conv1.weight"
    if name.startswith("stem.conv1.norm.") and name[len("stem.conv1.norm."):] in BN_STATS:
        return f"bn1.{name[len('stem.conv1.norm.'):]}"
    stage = _D2_STAGE.fullmatch(name)
    part = stage and _D2_PART.fullmatch(stage.group(3))
    if not part:
        return None
    prefix = f"layer{int(stage.group(1)) - 1}.{stage.group(2)}"
    conv, norm, norm_stat, shortcut_stat = part.groups()
    if conv:
        return f"{prefix}.conv{conv}.weight"
    if norm:
        return f"{prefix}.bn{norm}.{norm_stat}" if norm_stat in BN_STATS else None
    if shortcut_stat:
        return f"{prefix}.downsample.1.{shortcut_stat}" if shortcut_stat in BN_STATS else None
    return f"{prefix}.downsample.0.weight"


# --------------------------------------------------------------------------- small helpers


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)


def _few(items: Any, n: int = 4) -> str:
    items = list(items)
    shown = ", ".join(str(i) for i in items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    line = f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
    return line if len(line) <= 120 else line[:117] + "..."


def _name(source: Any) -> str:
    return "the given checkpoint dict" if isinstance(source, Mapping) else f"'{os.fspath(source)}'"
