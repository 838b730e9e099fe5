"""Per-step values as pure functions of the iteration (MoCo v3 habit: passed into ``forward``)."""

from __future__ import annotations

import math


def cosine_lr(step: int, total_steps: int, base_lr: float) -> float:
    """Cosine decay from ``base_lr`` at step 0 to 0 at ``total_steps``, no warm-up (spec section 2).

    Updated every iteration rather than every epoch (MoCo and the authors step
    per epoch; per iteration is the smooth version of the same curve).
    """
    progress = min(step, total_steps) / max(total_steps, 1)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * progress))


def loss_lambda_at(step: int, loss_lambda: float, warmup_iters: int) -> float:
    """The dense-loss weight: 0 for the first ``warmup_iters`` iterations, then ``loss_lambda``."""
    return 0.0 if step < warmup_iters else loss_lambda
