"""Per-step values as pure functions of the iteration (MoCo v3 habit: passed into ``forward``).

Pre-training and every evaluation protocol take their learning rate from here;
each function is a plain ``step -> value`` map with no optimizer in sight.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def cosine_lr(step: int, total_steps: int, base_lr: float) -> float:
    """Cosine decay from ``base_lr`` at step 0 to 0 at ``total_steps``, no warm-up.

    Updated every iteration rather than every epoch (MoCo and the authors step
    per epoch; per iteration is the smooth version of the same curve).
    """
    progress = min(step, total_steps) / max(total_steps, 1)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * progress))


def poly_lr(step: int, total_steps: int, base_lr: float, power: float, min_lr: float) -> float:
    """Polynomial decay from ``base_lr`` to ``min_lr`` (mmsegmentation's schedule).

    ``(base_lr - min_lr) * (1 - step / total_steps) ** power + min_lr``.
    """
    return (base_lr - min_lr) * (1 - step / total_steps) ** power + min_lr


def warmup_step_lr(
    step: int,
    total_steps: int,
    base_lr: float,
    warmup_steps: int,
    milestones: Sequence[float],
    warmup_factor: float = 0.001,
) -> float:
    """Linear warm-up from ``warmup_factor * base_lr``, then x0.1 at each milestone (detectron2's 1x schedule).

    Args:
        milestones: fractions of ``total_steps`` at which the rate drops x0.1
            (a drop that falls inside the warm-up also scales the warm-up).
    """
    decay = 0.1 ** sum(step >= round(f * total_steps) for f in milestones)
    if step < warmup_steps:
        alpha = step / warmup_steps
        return base_lr * decay * (warmup_factor * (1 - alpha) + alpha)
    return base_lr * decay


def loss_lambda_at(step: int, loss_lambda: float, warmup_iters: int) -> float:
    """The dense-loss weight: 0 for the first ``warmup_iters`` iterations, then ``loss_lambda``."""
    return 0.0 if step < warmup_iters else loss_lambda


def dense_positives_at(step: int, dense_matching: str, switch_iters: int) -> str:
    """This step's rule for the dense positives (:data:`densecl.losses.POSITIVES`).

    ``hybrid`` is ``geometry`` for the first ``switch_iters`` iterations, then
    the paper's ``features``: right positives while the backbone cannot match
    yet, the paper's self-consistent matching once it can. Any other value is
    its own rule at every step.
    """
    if dense_matching == "hybrid":
        return "geometry" if step < switch_iters else "features"
    return dense_matching
