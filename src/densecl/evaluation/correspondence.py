"""Dense correspondence against ground-truth geometry: does a view's feature find the same place in the other view?

Two views of one held-out image with a known crop, flip and rotation
(:mod:`densecl.data.geometry`), the MoCo-v2 colour augmentation on top so that
colour is no shortcut. For every cell of view 1's frozen feature map whose
centre shows a part of the image that view 2 shows too, the true cell of
view 2 is the one holding that image point; the predicted cell is the most
cosine-similar one. Scored per view pair:

- ``accuracy``: the predicted cell is the true one;
- ``same_cell_baseline``: how often the true cell has the query's own index
  (a matcher that ignores the features and answers "the same place"; a
  property of the view pairs alone, the same for every weights);
- ``within_R``: the predicted cell's centre lies within R view pixels of the true point;
- ``mutual_precision`` / ``mutual_recall``: mutual nearest neighbours (the
  supplementary's matching) that are correct, over all mutual pairs / over all
  cells that have a true match;
- ``true_similarity``, ``best_false_similarity``, ``margin``: the cosine to
  the true cell, to the best other cell, and their difference;
- ``within_view_similarity``: the mean cosine between different cells of one
  view (1 means every location of an image has collapsed to one vector, which
  a dense loss whose negatives all come from other images does not forbid);
- ``confident`` / ``confident_correct``: mutual matches with cosine >= the
  threshold (0.9 in the paper's picture), and how many of them are right.

Each stage (C4, C5) is scored on its own. The view pairs depend on the seed
only, so every weights file meets the same pairs; the spread over pairs is
reported beside the mean (``sd``), and random init is the floor to read
every number against. Works on any image folder::

    densecl eval correspondence --weights runs/a/checkpoint.pt --data photos/ --pairs 200 --crop 224
    densecl eval correspondence --weights random --arch resnet50 --data photos/ --pairs 200 --crop 224
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2

from densecl.data.geometry import ViewGeometry, cell_centres, corresponding_cells, sample_view
from densecl.data.jitter import BandJitter, default_mode
from densecl.data.transforms import moco_v2_photometric
from densecl.errors import InputError
from densecl.evaluation import options
from densecl.evaluation.features import STAGE_NAMES, frozen, parse_stages
from densecl.evaluation.options import option
from densecl.evaluation.registry import Protocol
from densecl.evaluation.results import Evaluation
from densecl.inputs import InputSpec, input_of
from densecl.inputs.files import image_size
from densecl.inputs.sources import ImageFiles, Reading, SceneImages, image_source
from densecl.matches import image_name, mutual_matches, seeded_images
from densecl.models.backbones import ResNetBackbone

DEFAULT_RADII = (16, 32, 64)  # view pixels


@dataclass(frozen=True)
class CorrespondenceConfig:
    data: str = option(help="images: a folder (searched recursively), a .txt list of paths, a COCO .json, or 'scenes'")
    pairs: int = option(100, "view pairs, one per image (distinct images)")
    crop: int = option(224, "side of each view in pixels")
    min_scale: float = option(0.2, "smallest crop area fraction (training uses 0.2)")
    max_angle: float = option(
        0.0, "rotate each view by up to this many degrees (0: crop and flip only, as in training)"
    )
    photometric: bool = option(True, "apply the MoCo-v2 colour jitter, grayscale and blur to both views")
    stages: str = option("c4,c5", "feature maps to score, each on its own")
    radii: str = option("16,32,64", "distances in view pixels for the within_R scores")
    threshold: float = option(0.9, "cosine of a confident mutual match (0.9 in the paper's picture)")
    batch_size: int = options.batch_size(16)
    device: str = options.device()


class ViewPairs(NamedTuple):
    """Rendered, normalised view pairs and their geometry: ``P x 3 x crop x crop`` each."""

    view1: torch.Tensor
    view2: torch.Tensor
    geometry: list[tuple[ViewGeometry, ViewGeometry]]
    names: list[str]


def load_data(config: CorrespondenceConfig) -> ImageFiles | SceneImages:
    """The image source, checked to hold at least ``pairs`` images."""
    parse_stages(config.stages)
    parse_radii(config.radii)
    if config.pairs < 1 or config.crop < 32:
        raise InputError(f"correspondence needs --pairs >= 1 and --crop >= 32, got {config.pairs} and {config.crop}")
    source = image_source(config.data)
    if len(source) < config.pairs:
        raise InputError(
            f"{source.origin} has {len(source)} images but --pairs {config.pairs} asks for one view pair "
            f"per image; lower --pairs to {len(source)} or add images"
        )
    return source


def evaluate(
    backbone: ResNetBackbone, data: ImageFiles | SceneImages, config: CorrespondenceConfig, seeds: list[int]
) -> Evaluation:
    stages = parse_stages(config.stages)
    radii = parse_radii(config.radii)
    backbone.to(config.device)
    per_seed, details = [], []
    inputs = input_of(backbone)
    data.expect(Reading(values=inputs.photo is False, bands=inputs.bands))
    for seed in seeds:
        pairs = view_pairs(data, config, seed, inputs)
        with frozen(backbone):
            maps1 = stage_maps(backbone, pairs.view1, stages, config)
            maps2 = stage_maps(backbone, pairs.view2, stages, config)
        metrics, spread = {}, {}
        for stage in stages:
            name = STAGE_NAMES[stage]
            scores = [
                score_pair(maps1[stage][p], maps2[stage][p], g1, g2, radii, config.threshold)
                for p, (g1, g2) in enumerate(pairs.geometry)
            ]
            for key in scores[0]:
                values = np.array([s[key] for s in scores], dtype=np.float64)
                values = values[~np.isnan(values)]
                metrics[f"{name}_{key}"] = float(values.mean()) if values.size else None
                spread[f"{name}_{key}"] = float(values.std(ddof=1)) if values.size > 1 else 0.0
        per_seed.append(metrics)
        details.append({"seed": seed, "sd_over_pairs": spread, "images": pairs.names})
    last = STAGE_NAMES[stages[-1]]
    data_info = {"source": data.origin, "images": len(data), "pairs": config.pairs, "crop": config.crop}
    headline = [
        f"{last}_accuracy",
        f"{last}_within_{radii[1] if len(radii) > 1 else radii[0]:g}",
        f"{last}_mutual_precision",
    ]
    return Evaluation(headline=headline, per_seed=per_seed, details=details, data=data_info)


def parse_radii(text: str) -> tuple[float, ...]:
    try:
        radii = tuple(sorted(float(r) for r in text.split(",") if r.strip()))
    except ValueError:
        raise InputError(f"--radii must be comma-separated numbers of pixels, got {text!r}") from None
    if not radii or radii[0] <= 0:
        raise InputError(f"--radii must be positive pixel distances, got {text!r}")
    return radii


def view_pairs(
    source: ImageFiles | SceneImages, config: CorrespondenceConfig, seed: int, inputs: InputSpec | None = None
) -> ViewPairs:
    """``config.pairs`` view pairs of distinct images, fixed by ``seed`` alone (not by the weights).

    Images come in a seeded order; an unreadable one is replaced by the next.
    Each pair's geometry comes from its own generator and its colour
    augmentation from the global one, forked, so the caller's state is kept.
    ``inputs`` (the backbone's) says how images become its input: RGB photos
    as always, other images with the N-channel rule of :mod:`densecl.data.jitter`.
    """
    inputs = inputs or InputSpec()
    photometric = moco_v2_photometric(config.crop) if config.photometric else None
    mode = default_mode(inputs.channels, inputs.photo is not False or (inputs.bands is None and inputs.channels == 3))
    band_photometric = BandJitter(inputs.channels, mode, config.crop) if config.photometric else None
    view1, view2, geometry, names = [], [], [], []
    for index, image, pair_seed in seeded_images(source, seed, cycle=False):  # distinct images
        if len(names) == config.pairs:
            break
        if inputs.takes_as_photo(image):
            pixels, augment, finish = v2.functional.pil_to_tensor(image), photometric, inputs.finish_photo  # uint8
        else:  # C x H x W float, no data filled
            pixels, augment = inputs.prepare(image, image_name(source, index)), band_photometric
            finish = functools.partial(inputs.normalise, photo=isinstance(image, Image.Image))
        pair_g = torch.Generator().manual_seed(pair_seed)
        width, height = image_size(image)
        g1, g2 = (sample_view(width, height, config.crop, pair_g, config.min_scale, config.max_angle) for _ in range(2))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(pair_seed)
            v1, v2_ = (augment(gv.apply(pixels)) if augment else gv.apply(pixels) for gv in (g1, g2))
        view1.append(finish(v1))
        view2.append(finish(v2_))
        geometry.append((g1, g2))
        names.append(image_name(source, index))
    if len(names) < config.pairs:
        raise InputError(
            f"only {len(names)} of the {len(source)} images of {source.origin} are readable; --pairs asks for "
            f"{config.pairs}"
        )
    return ViewPairs(torch.stack(view1), torch.stack(view2), geometry, names)


@torch.no_grad()
def stage_maps(
    backbone: ResNetBackbone, views: torch.Tensor, stages: tuple[int, ...], config: CorrespondenceConfig
) -> dict[int, torch.Tensor]:
    """``P x 3 x H x W`` views -> ``{stage: P x C x h x w}`` float32 maps on the CPU."""
    out: dict[int, list[torch.Tensor]] = {s: [] for s in stages}
    for chunk in views.split(config.batch_size):
        maps = backbone.forward_stages(chunk.to(config.device))
        for s in stages:
            out[s].append(maps[s].float().cpu())
    return {s: torch.cat(v) for s, v in out.items()}


def score_pair(
    f1: torch.Tensor,
    f2: torch.Tensor,
    g1: ViewGeometry,
    g2: ViewGeometry,
    radii: Sequence[float] = DEFAULT_RADII,
    threshold: float = 0.9,
) -> dict[str, float]:
    """Scores one view pair's feature maps against the views' geometry.

    Args:
        f1: ``C x h1 x w1`` features of view 1 (any scale; cosines are taken).
        f2: ``C x h2 x w2`` features of view 2.
        g1, g2: the views' geometry; their ``size`` is the side the maps cover.
        radii: distances in view-2 pixels for the ``within_R`` scores.
        threshold: cosine of a confident mutual match.

    Returns:
        The scores named in the module docstring; ``nan`` where a score has no
        case to count (no overlapping cell, no mutual match).
    """
    grid1, grid2 = tuple(f1.shape[-2:]), tuple(f2.shape[-2:])
    z1 = F.normalize(f1.flatten(1).double(), dim=0)  # C x S1
    z2 = F.normalize(f2.flatten(1).double(), dim=0)  # C x S2
    sim = z1.T @ z2  # S1 x S2 cosines

    valid, true, target = corresponding_cells(g1, g2, grid1, grid2)  # S1, S1, S1 x 2 view-2 pixels
    pred = sim.argmax(dim=1)  # S1
    correct = valid & (pred == true)
    error = (cell_centres(grid2, g2.size)[pred] - target).norm(dim=1)  # S1 view-2 pixels

    matches = mutual_matches(z1, z2)  # a mutual match's view-2 cell is its view-1 cell's argmax
    mutual_correct = correct[matches.idx1]
    confident = matches.score >= threshold

    true_sim = sim.gather(1, true[:, None])[:, 0]  # S1
    false_sim = sim.scatter(1, true[:, None], -math.inf).amax(dim=1)  # S1
    n = int(valid.sum())
    scores = {
        "overlap_cells": float(n),
        "accuracy": _mean(correct, valid),
        "same_cell_baseline": _mean(true == torch.arange(len(true)), valid) if grid1 == grid2 else math.nan,
        **{f"within_{r:g}": _mean(error <= r, valid) for r in radii},
        "mutual_precision": float(mutual_correct.double().mean()) if len(matches.idx1) else math.nan,
        "mutual_recall": float(mutual_correct.sum()) / n if n else math.nan,
        "true_similarity": _mean(true_sim, valid),
        "best_false_similarity": _mean(false_sim, valid),
        "margin": _mean(true_sim - false_sim, valid),
        "within_view_similarity": (_off_diagonal_mean(z1) + _off_diagonal_mean(z2)) / 2,
        "confident": float(confident.sum()),
        "confident_correct": float((confident & mutual_correct).sum()),
    }
    return scores


def _mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    return float(values[mask].double().mean()) if bool(mask.any()) else math.nan


def _off_diagonal_mean(z: torch.Tensor) -> float:
    """Mean cosine between different locations of one map; ``z`` is ``C x S``, unit columns."""
    s = z.shape[1]
    if s < 2:
        return math.nan
    gram = z.T @ z  # S x S
    return float((gram.sum() - gram.diagonal().sum()) / (s * (s - 1)))


PROTOCOL = Protocol("correspondence", CorrespondenceConfig, load_data, evaluate, description=__doc__)
