"""Any timm CNN as a backbone: ``--arch timm/<name>``.

timm's feature contract does the work, with no code per family. The model is
built with ``pretrained=False`` (weights only ever come from files, see
:mod:`densecl.weights.timm`); its ``feature_info`` lists the feature levels;
``prune_intermediate_layers`` removes what follows the last one (pooling and
classifier, and where a family has them the layers between: EfficientNet's
``conv_head``/``bn2``, ConvNeXt's ``head.norm``); ``forward_intermediates``
returns the last four levels. The last is C5, the dense head's grid; the one
before is C4, as for a ResNet, and :meth:`TimmBackbone.forward_stages` gives
C2..C5 in the places the protocols index.

The timm model is the ``model`` child, so the backbone's state dict holds its
tensors under :data:`PREFIX`; :meth:`TimmBackbone.library_state_dict` gives
them under timm's own names: the keys of ``timm.create_model(name)`` less
:attr:`TimmBackbone.head_keys`.

Refused, each in one line: a name timm does not know (with the closest
names), a model with no feature levels, and one whose last levels are all at
one stride (a ViT's tokens: no C4 below C5).
"""

from __future__ import annotations

import difflib
import functools

import torch
from torch import nn

from densecl.errors import InputError
from densecl.inputs import InputSpec

PREFIX = "model."  # the timm model's tensors in this backbone's state dict
LEVELS = 4  # feature levels taken, the last four: C2, C3, C4, C5


def _timm():
    try:
        import timm
    except ImportError as e:
        raise InputError("timm backbones need the timm package (>= 1.0): pip install timm") from e
    return timm


def check_name(name: str) -> None:
    """Raises :class:`InputError` (one line, with the closest names) for a model timm does not know."""
    timm = _timm()
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.5)
        hint = f"; the closest: {', '.join('timm/' + c for c in close)}" if close else ""
        raise InputError(
            f"timm has no model {name!r}{hint}: give --arch timm/<name> with a name from timm.list_models()"
        )


class TimmBackbone(nn.Module):
    """A timm model up to its last feature map, keeping the backbone contract of
    :class:`~densecl.models.backbones.ResNetBackbone`.

    Args:
        name: timm model name (``convnext_atto``), without the ``timm/`` prefix.
        in_channels: input channels of the first convolution (timm's ``in_chans``).
    """

    def __init__(self, name: str, in_channels: int = 3) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        check_name(name)
        model = _timm().create_model(name, pretrained=False, in_chans=in_channels)
        levels = _feature_levels(name, model)
        full = set(model.state_dict())
        #: absolute indices of the levels taken, for forward_intermediates
        self.take: tuple[int, ...] = tuple(
            model.prune_intermediate_layers(indices=LEVELS, prune_norm=True, prune_head=True)
        )
        self.model = model
        self.model_name = name
        #: timm's keys that pruning removed (the head): dropped on purpose from timm weights files
        self.head_keys: frozenset[str] = frozenset(full - set(model.state_dict()))
        #: channels of C2..C5, in order
        self.stage_channels: tuple[int, ...] = tuple(levels[i]["num_chs"] for i in self.take)
        self.out_channels: int = self.stage_channels[-1]
        #: the first convolution's weight, under timm's names (what --init adapts to other channel counts)
        self.stem: str = _first_conv(model, in_channels) + ".weight"
        self.input_spec: InputSpec = InputSpec() if in_channels == 3 else InputSpec(in_channels, None, None, None, None)

    @property
    def in_channels(self) -> int:
        return self.model.get_submodule(self.stem.removesuffix(".weight")).in_channels

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Returns [C2, C3, C4, C5], the last four feature levels (``N x C_k x h_k x w_k``)."""
        return list(self.model.forward_intermediates(x, indices=list(self.take), intermediates_only=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``N x in_channels x H x W`` -> C5, the last feature map (``N x C x H/32 x W/32`` for most CNNs)."""
        return self.forward_stages(x)[-1]

    def feature_sizes(self, height: int, width: int) -> tuple[tuple[int, int], ...]:
        """``(h, w)`` of C2..C5 for an input of ``height x width``, from a forward on the meta device."""
        return feature_sizes(self.model_name, height, width)

    def library_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors under timm's names (``timm.create_model(name).state_dict()`` less :attr:`head_keys`)."""
        return self.model.state_dict()

    def load_library_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Loads tensors under timm's names, strictly."""
        self.model.load_state_dict(state_dict, strict=True)


def _feature_levels(name: str, model: nn.Module) -> list[dict]:
    """timm's ``feature_info`` of a model that has a CNN's feature pyramid; else one line saying why not."""
    info = getattr(model, "feature_info", None)
    info = list(getattr(info, "info", info) or [])
    if len(info) < LEVELS or not hasattr(model, "forward_intermediates"):
        raise InputError(
            f"timm/{name} gives no spatial feature maps at {LEVELS} levels (timm's feature_info lists {len(info)}): "
            "DenseCL needs a CNN's last feature map and the stage before it; choose a CNN (e.g. timm/convnext_atto)"
        )
    strides = [level["reduction"] for level in info[-LEVELS:]]
    if strides[0] == strides[-1]:
        raise InputError(
            f"timm/{name} has no spatial feature pyramid: its last {LEVELS} feature levels are all at stride "
            f"{strides[0]} (a transformer's tokens, not a CNN's stages); DenseCL takes C5 and the C4 below it from a "
            "CNN: choose one (e.g. timm/convnext_atto, timm/resnet50)"
        )
    return info


def _first_conv(model: nn.Module, in_channels: int) -> str:
    """The module name of the first convolution: timm's ``pretrained_cfg['first_conv']``, else the first
    ``Conv2d`` that takes the input's channels."""
    named = getattr(model, "pretrained_cfg", {}).get("first_conv")
    if isinstance(named, str):
        try:
            if isinstance(model.get_submodule(named), nn.Conv2d):
                return named
        except AttributeError:
            pass
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == in_channels:
            return module_name
    raise InputError(f"{type(model).__name__} has no convolution that takes the input; choose a CNN")


@functools.cache
def meta_backbone(name: str) -> TimmBackbone:
    """A :class:`TimmBackbone` on the meta device: keys, shapes and feature sizes without memory or compute."""
    with torch.device("meta"):
        return TimmBackbone(name).eval()


@functools.lru_cache(maxsize=1024)
def feature_sizes(name: str, height: int, width: int) -> tuple[tuple[int, int], ...]:
    """``(h, w)`` of C2..C5 of ``timm/<name>`` for an input of ``height x width`` (the channels do not matter)."""
    with torch.no_grad():
        maps = meta_backbone(name).forward_stages(torch.empty(1, 3, height, width, device="meta"))
    return tuple((m.shape[-2], m.shape[-1]) for m in maps)
