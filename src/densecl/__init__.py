"""DenseCL: Dense Contrastive Learning for self-supervised visual pre-training.

Wang, Zhang, Shen, Kong, Li, CVPR 2021 (arXiv 2011.09157). ``loss_lambda=0``
is MoCo-v2 (Chen et al., 2020) in the same code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["DenseCL", "DenseCLOutput"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from densecl.models.densecl import DenseCL, DenseCLOutput


def __getattr__(name: str) -> Any:
    """``densecl.DenseCL`` imports torch on first use, so ``densecl --help`` and the data tools start fast."""
    if name in __all__:
        from densecl.models import densecl as algorithm

        return getattr(algorithm, name)
    raise AttributeError(f"module 'densecl' has no attribute {name!r}")
