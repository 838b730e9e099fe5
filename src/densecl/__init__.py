"""DenseCL: Dense Contrastive Learning for self-supervised visual pre-training.

Wang, Zhang, Shen, Kong, Li, CVPR 2021 (arXiv 2011.09157). ``loss_lambda=0``
is MoCo-v2 (Chen et al., 2020) in the same code.
"""

from densecl.models.densecl import DenseCL, DenseCLOutput

__all__ = ["DenseCL", "DenseCLOutput"]
__version__ = "0.1.0"
