"""safetensors: torchvision ResNet names (no ``fc``) in a ``.safetensors`` file.

Readable without pickle: ``safetensors.torch.load_file(PATH)`` gives the same
flat dict as the torchvision export; timm's file route reads it too (it picks
the reader by the ``.safetensors`` suffix). mmengine's checkpoint loader does not
read safetensors: use ``--format mmlab`` for OpenMMLab. A timm backbone is
written under timm's names, the header naming the model (``arch``), as
:mod:`densecl.export.timm` describes; densecl reads the name back.
"""

from __future__ import annotations

from pathlib import Path

from densecl.config import is_timm_arch
from densecl.errors import InputError
from densecl.export import inputs, timm
from densecl.export.torchvision import plain_state_dict
from densecl.weights import BackboneWeights

SUMMARY = "torchvision names (timm's for a timm/<name> backbone) in a .safetensors file (torchvision, timm)"


def write(weights: BackboneWeights, path: Path) -> None:
    try:
        from safetensors.torch import save_file
    except ImportError as e:
        raise InputError("--format safetensors needs the safetensors package; pip install safetensors") from e
    metadata = {
        "format": "pt",
        "layout": "timm" if is_timm_arch(weights.arch) else "torchvision",
        "arch": str(weights.arch),
        "source_format": weights.source_format,
        **inputs.metadata(weights),
    }
    save_file(plain_state_dict(weights), str(path), metadata=metadata)


def usage(path: Path, weights: BackboneWeights) -> str:
    if is_timm_arch(weights.arch):
        return f'state_dict = safetensors.torch.load_file("{path}")  # timm\'s names\n' + timm.timm_usage(path, weights)
    conv = inputs.first_conv_line(weights)
    chans = f"in_chans={weights.in_channels}, " if weights.in_channels != 3 else ""
    return "\n".join(
        [
            f'state_dict = safetensors.torch.load_file("{path}")',
            f"model = torchvision.models.{weights.arch}()",
            *([conv] if conv else []),
            "model.load_state_dict(state_dict, strict=False)  # missing: fc.weight, fc.bias",
            f'# or: timm.create_model("{weights.arch}", pretrained=True, {chans}'
            f'pretrained_cfg_overlay=dict(file="{path}", num_classes=0))',
            inputs.comment(weights),
        ]
    )
