"""What exported weights take as input, written beside them: channels, bands, mean and std.

A densecl checkpoint knows its input (:class:`~densecl.inputs.InputSpec`,
stored in its config); an export must pass that on, since the weights are
wrong for any other normalisation. Every format's usage text says it (and
how to build a model whose first convolution takes that many channels); the
formats with room for metadata (OpenMMLab's ``meta``, safetensors' header)
also carry it, and densecl reads it back from OpenMMLab files.
"""

from __future__ import annotations

import json

from densecl.weights import BackboneWeights


def first_conv_line(weights: BackboneWeights, model: str = "model") -> str | None:
    """The line that gives a torchvision / timm ResNet the exported first convolution's shape; None for RGB."""
    if weights.in_channels == 3:
        return None
    return (
        f"{model}.conv1 = torch.nn.Conv2d({weights.in_channels}, 64, kernel_size=7, stride=2, padding=3, bias=False)"
        f"  # {weights.in_channels} input channels, as exported"
    )


def statistics(weights: BackboneWeights) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The input's per-channel mean and std, where the weights say (RGB weights: ImageNet's)."""
    spec = weights.input_spec
    if spec.mean is None or spec.std is None:
        return None
    return spec.mean, spec.std


def comment(weights: BackboneWeights) -> str:
    """``# input: ...``: what a model with these weights must be fed."""
    spec = weights.input_spec
    stats = statistics(weights)
    if stats is None:
        return f"# input: {spec.channels} channels; the file does not say their mean and std: use your pre-training's"
    mean, std = (", ".join(f"{v:.7g}" for v in values) for values in stats)
    units = "RGB in [0, 1]" if spec.photo is not False else "the images' stored values (not scaled)"
    chosen = f", bands {','.join(map(str, spec.bands))} of the files" if spec.bands else ""
    return (
        f"# input: {spec.channels} channels{chosen}, {units}; normalise x = (x - mean) / std, "
        f"mean=[{mean}], std=[{std}]"
    )


def metadata(weights: BackboneWeights) -> dict[str, str]:
    """The input as text entries (safetensors metadata): ``in_channels`` and ``input`` (JSON of the config fields)."""
    return {"in_channels": str(weights.in_channels), "input": json.dumps(weights.input_spec.to_config())}
