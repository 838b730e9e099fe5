"""detectron2's ResNet names <-> torchvision's, one key at a time (read by import and by export).

One table, read in both directions: torchvision's ``layerK`` is detectron2's
``res{K+1}``, ``bnN`` is ``convN.norm``, ``downsample.0/1`` is ``shortcut`` /
``shortcut.norm``, and the stem's ``conv1``/``bn1`` are ``stem.conv1`` /
``stem.conv1.norm``. ``num_batches_tracked`` has no detectron2 counterpart.
"""

from __future__ import annotations

import functools
import re

BN_STATS = ("weight", "bias", "running_mean", "running_var")

TORCHVISION, DETECTRON2 = 0, 1
#: (torchvision, detectron2) name templates
NAMES: tuple[tuple[str, str], ...] = (
    ("conv1.weight", "stem.conv1.weight"),
    ("bn1.{stat}", "stem.conv1.norm.{stat}"),
    ("layer{stage}.{block}.conv{n}.weight", "res{stage}.{block}.conv{n}.weight"),
    ("layer{stage}.{block}.bn{n}.{stat}", "res{stage}.{block}.conv{n}.norm.{stat}"),
    ("layer{stage}.{block}.downsample.0.weight", "res{stage}.{block}.shortcut.weight"),
    ("layer{stage}.{block}.downsample.1.{stat}", "res{stage}.{block}.shortcut.norm.{stat}"),
)
_FIRST_STAGE = {TORCHVISION: 1, DETECTRON2: 2}  # layer1 is res2


def torchvision_to_detectron2(name: str) -> str | None:
    """``layer1.0.bn2.weight`` -> ``res2.0.conv2.norm.weight``; None for keys detectron2 has no place for."""
    return _rename(name, TORCHVISION, DETECTRON2)


def detectron2_to_torchvision(name: str) -> str | None:
    """The inverse of :func:`torchvision_to_detectron2`; None for names outside the ResNet."""
    return _rename(name, DETECTRON2, TORCHVISION)


def _rename(name: str, source: int, target: int) -> str | None:
    for names in NAMES:
        if match := _pattern(names[source], source).fullmatch(name):
            fields = match.groupdict()
            if "stage" in fields:
                fields["stage"] = int(fields["stage"]) - _FIRST_STAGE[source] + _FIRST_STAGE[target]
            return names[target].format(**fields)
    return None


@functools.cache
def _pattern(template: str, side: int) -> re.Pattern:
    first = _FIRST_STAGE[side]
    fields = {"stage": f"[{first}-{first + 3}]", "block": r"\d+", "n": r"\d", "stat": "|".join(BN_STATS)}
    parts = re.split(r"\{(\w+)\}", template)  # literal, field, literal, field, ..., literal
    return re.compile("".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>{fields[p]})" for i, p in enumerate(parts)))
