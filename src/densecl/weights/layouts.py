"""Where the query backbone sits in every checkpoint layout people bring, and what is left out on purpose.

Layouts (``source_format``), recognised by the key of the stem convolution
after a DDP ``module.`` prefix is removed; the first row that fits wins:

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
mmlab              ``backbone.*`` with ``neck.*``/``head.*`` (an OpenMMLab
                   model), or plain names under ``{"state_dict", "meta"}``
detectron2         ``stem.conv1.*``, ``res2.0.conv1.norm.*``, ... (a pickle of
                   ``{"model": {name: ndarray}}``)
timm               plain names in a timm training checkpoint (``arch`` and
                   ``version`` beside ``state_dict``)
authors-backbone   plain names under ``{"state_dict": ...}`` (the authors'
                   released backbones)
torchvision        plain torchvision names (``conv1``, ``bn1``, ``layer1.0.*``);
                   timm's ResNet names are the same, so a timm state dict reads
                   as ``torchvision`` too
=================  ==========================================================

The two DenseCL rows are derived from :mod:`densecl.models.authors_layout`,
which owns the authors' names, this model's names and the rule for the
authors' second registrations (``backbone.*``, ``neck.*``: must be copies;
``head.*``: ignored). The momentum encoder is dropped on purpose: the query
encoder is the one that is evaluated and transferred.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import torch

from densecl.errors import InputError
from densecl.models import authors_layout as authors
from densecl.weights.detectron2 import detectron2_to_torchvision
from densecl.weights.messages import few

DDP_PREFIX = "module."  # DistributedDataParallel's wrapper


def _identity(name: str) -> str | None:
    return name


def _always(keys: frozenset[str], container: str) -> bool:
    return True


@dataclass(frozen=True)
class Layout:
    """Where the query backbone lives in one checkpoint layout and what is left out on purpose."""

    name: str
    backbone: str  # prefix of the query backbone's keys
    dropped: tuple[str, ...] = ()  # prefixes deliberately dropped
    dropped_keys: tuple[str, ...] = ()  # exact keys deliberately dropped (queue buffers)
    copies: tuple[tuple[str, str], ...] = ()  # (prefix, prefix it must equal tensor for tensor)
    rename: Callable[[str], str | None] = _identity  # backbone name -> torchvision name; None: fits none
    stem: str = "conv1.weight"  # the backbone's first key, in this layout's spelling
    applies: Callable[[frozenset[str], str], bool] = _always  # (keys, container kind) -> this row, not a later one

    @property
    def marker(self) -> str:
        """The key whose presence says a state dict is (one of the rows) in this layout."""
        return self.backbone + self.stem


MOMENTUM_PREFIXES = ("encoder_k.", "momentum_encoder.", "target_net.", "momentum_backbone.", "momentum_neck.")
OPENMMLAB_PARTS = ("neck.", "head.", "data_preprocessor.")

(_OUR_BACKBONE,) = authors.ours("backbone")
DENSECL = Layout(
    "densecl",
    backbone=_OUR_BACKBONE,
    dropped=authors.ours("head") + authors.ours("momentum"),
    dropped_keys=authors.ours("queue"),
)
AUTHORS_FULL = Layout(
    "authors-full",
    backbone=authors.QUERY_BACKBONE,
    dropped=(authors.QUERY_NECK, authors.MOMENTUM, *authors.IGNORED),
    dropped_keys=authors.BUFFERS,
    copies=authors.COPIES,
    applies=lambda keys, container: authors.is_dense(keys),
)
LAYOUTS: tuple[Layout, ...] = (
    DENSECL,
    AUTHORS_FULL,
    replace(AUTHORS_FULL, name="mmselfsup", applies=_always),  # mmselfsup 0.x MoCo: no dense head
    Layout("moco", backbone="encoder_q.", dropped=("encoder_q.fc.", "encoder_k."), dropped_keys=authors.BUFFERS),
    Layout("moco", backbone="base_encoder.", dropped=("base_encoder.fc.", "momentum_encoder.", "predictor.")),
    Layout(
        "mmselfsup",
        backbone="backbone.",
        dropped=(*OPENMMLAB_PARTS, *MOMENTUM_PREFIXES),
        dropped_keys=authors.BUFFERS,
        applies=lambda keys, container: any(k.startswith(MOMENTUM_PREFIXES) or k in authors.BUFFERS for k in keys),
    ),
    Layout("mmlab", backbone="backbone.", dropped=OPENMMLAB_PARTS),
    Layout(
        "detectron2",
        backbone="",
        dropped=("fc.", "linear."),
        rename=detectron2_to_torchvision,
        stem="stem.conv1.weight",
    ),
    Layout("timm", backbone="", dropped=("fc.",), applies=lambda keys, container: container == "timm"),
    Layout("mmlab", backbone="", dropped=("fc.",), applies=lambda keys, container: container == "meta"),
    Layout(
        "authors-backbone", backbone="", dropped=("fc.",), applies=lambda keys, container: container == "state_dict"
    ),
    Layout("torchvision", backbone="", dropped=("fc.",)),
)


def detect_layout(state: Mapping[str, torch.Tensor], container: str, where: str) -> Layout:
    """The first row of :data:`LAYOUTS` whose marker key is present and whose test passes."""
    keys = list(state)
    if keys and all(k.startswith(DDP_PREFIX) for k in keys):
        return with_prefix(_detect(frozenset(k[len(DDP_PREFIX) :] for k in keys), keys, container, where), DDP_PREFIX)
    return _detect(frozenset(keys), keys, container, where)


def _detect(keys: frozenset[str], ordered_keys: list[str], container: str, where: str) -> Layout:
    for layout in LAYOUTS:
        if layout.marker in keys and layout.applies(keys, container):
            return layout
    markers = ", ".join(dict.fromkeys(layout.marker for layout in LAYOUTS))
    raise InputError(
        f"{where} is no ResNet checkpoint this reader knows: it has none of {markers} "
        f"(first keys: {few(ordered_keys)}); pass a DenseCL, MoCo, OpenMMLab, detectron2 or torchvision ResNet "
        "checkpoint, or for a timm model name it (--arch timm/<name>)"
    )


def with_prefix(layout: Layout, prefix: str) -> Layout:
    return replace(
        layout,
        backbone=prefix + layout.backbone,
        dropped=tuple(prefix + p for p in layout.dropped),
        dropped_keys=tuple(prefix + k for k in layout.dropped_keys),
        copies=tuple((prefix + a, prefix + b) for a, b in layout.copies),
    )


def convert(
    state: Mapping[str, torch.Tensor], layout: Layout, where: str
) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """Places every source key: into the backbone (torchvision names), or deliberately dropped; nothing else.

    Returns:
        (the backbone's state dict, the dropped source keys as spelled in the source)
    """
    target: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    dropped, unplaced = [], []
    for key, tensor in state.items():
        if (copy_of := authors.copy_source(key, layout.copies)) is not None:
            authors.check_copy(state, key, copy_of, where)
            dropped.append(key)
        elif key in layout.dropped_keys or key.startswith(layout.dropped):
            dropped.append(key)
        elif key.startswith(layout.backbone) and (name := layout.rename(key[len(layout.backbone) :])) is not None:
            if name in target:
                raise InputError(f"{where}: {origin[name]} and {key} both map to {name}; the file is inconsistent")
            target[name], origin[name] = tensor, key
        else:
            unplaced.append(key)
    if unplaced:
        raise InputError(
            f"{where} looks like a {layout.name} checkpoint but {len(unplaced)} keys fit nowhere: "
            f"{few(unplaced)}; pass the ResNet checkpoint itself, not a different network"
        )
    return target, tuple(dropped)


def fill_num_batches_tracked(state: dict[str, torch.Tensor]) -> None:
    """Adds the BN counters detectron2 and pre-2018 torchvision files lack, as 0; nothing else is filled in."""
    for key in [k for k in state if k.endswith(".running_mean")]:
        counter = key[: -len("running_mean")] + "num_batches_tracked"
        state.setdefault(counter, torch.tensor(0, dtype=torch.long))
