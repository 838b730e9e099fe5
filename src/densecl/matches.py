"""Dense correspondence between two views (DenseCL supplementary, section C).

Two views of one image go through a backbone; its C5 features, L2-normalised
at every location, are ``F1`` (``C x S1``) and ``F2`` (``C x S2``). For each
location of view 1 we take the location of view 2 of highest cosine
similarity, and keep the match only if it is mutual: view 2 -> view 1 gives
back the same location. "Each match is assigned an averaged similarity": the
mean of the view-1 -> view-2 and view-2 -> view-1 similarities. Cosine
similarity is symmetric, so for a mutual pair the two are the same number and
the score *is* the pair's cosine; the mean is computed anyway, as the paper
words it. The paper draws the matches with score >= 0.9 and finds many more
for DenseCL than for MoCo-v2 (supplementary Figure 1).

Backbone features come after a ReLU, so their cosines lie in [0, 1].

The picture and the command::

    densecl correspond --weights densecl_r50.pth --weights mocov2_r50.pth --image cat.jpg --out cat.png
    densecl correspond --weights densecl_r50.pth --weights mocov2_r50.pth --data scenes --pairs 64 --out scenes.png
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from densecl.data.geometry import ViewGeometry, corresponding_cells
from densecl.errors import InputError
from densecl.inputs import InputSpec


class Matches(NamedTuple):
    """Mutual nearest-neighbour matches between two feature maps; every tensor has length M.

    Locations are flat, row-major indices into the ``h x w`` grid of their view.
    """

    idx1: torch.Tensor  # M, long: location in view 1
    idx2: torch.Tensor  # M, long: its match in view 2
    score: torch.Tensor  # M: averaged similarity (= the pair's cosine)

    def at_least(self, threshold: float) -> Matches:
        """The matches with ``score >= threshold`` (the paper shows >= 0.9)."""
        keep = self.score >= threshold
        return Matches(self.idx1[keep], self.idx2[keep], self.score[keep])


def mutual_matches(f1: torch.Tensor, f2: torch.Tensor) -> Matches:
    """Mutual nearest neighbours by cosine similarity, each scored by its averaged similarity.

    Ties go to the lowest index (``argmax``), in both directions.

    Args:
        f1: ``C x S1`` features of view 1, L2-normalised along ``C``.
        f2: ``C x S2`` features of view 2, L2-normalised along ``C``.

    Returns:
        :class:`Matches`, ordered by view-1 location.

    Raises:
        ValueError: not two ``C x S`` matrices with the same ``C`` and ``S >= 1``.
    """
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[0] != f2.shape[0] or 0 in (f1.shape[1], f2.shape[1]):
        raise ValueError(
            f"expected C x S1 and C x S2 features with the same C and S >= 1, got {tuple(f1.shape)} and "
            f"{tuple(f2.shape)}"
        )
    sim = torch.einsum("cs,ct->st", f1, f2)  # S1 x S2 cosine similarities
    nearest2 = sim.argmax(dim=1)  # S1: best view-2 location of each view-1 location
    nearest1 = sim.argmax(dim=0)  # S2: best view-1 location of each view-2 location
    locations1 = torch.arange(f1.shape[1], device=f1.device)  # S1
    mutual = nearest1[nearest2] == locations1  # S1: view 1 -> view 2 -> view 1 comes back
    idx1, idx2 = locations1[mutual], nearest2[mutual]  # M, M
    forward = sim[idx1, idx2]  # M: similarity view 1 -> view 2
    backward = sim.T[idx2, idx1]  # M: similarity view 2 -> view 1, the same numbers
    return Matches(idx1, idx2, (forward + backward) / 2)


# --------------------------------------------------------------------------- views


class ViewPair(NamedTuple):
    """Two normalised ``3 x H x W`` views (ImageNet mean and std), where they came from, and their geometry if known."""

    view1: torch.Tensor
    view2: torch.Tensor
    name: str
    geometry: tuple[ViewGeometry, ViewGeometry] | None = None  # crop, flip: which cells truly correspond


class ImageSource(Protocol):
    """What :func:`densecl.data.sources.image_source` returns: ``len()`` and ``load(i)``."""

    def __len__(self) -> int: ...

    def load(self, index: int) -> Image.Image | None: ...


def seeded_images(source: ImageSource, seed: int, cycle: bool = True) -> Iterator[tuple[int, Image.Image, int]]:
    """``(index, image, pair_seed)`` for the readable images of ``source``, in an order fixed by ``seed`` alone.

    The one sampler of view pairs (the correspond picture and the
    correspondence instrument): a generator seeded with ``seed`` draws the
    order, then one pair seed after each readable image, so pair ``p`` is the
    same whatever number of pairs is asked, and whatever the weights. An
    unreadable image is skipped (one warning). ``cycle``: start the order again
    when it ends; else stop there.

    Raises:
        InputError: no image of the source can be read.
    """
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(source), generator=g).tolist()
    while True:
        readable = False
        for index in order:
            image = source.load(index)
            if image is None:
                continue
            readable = True
            yield index, image, int(torch.randint(2**62, (1,), generator=g))
        if not readable:
            raise InputError(f"no readable image in {getattr(source, 'origin', 'the data')}")
        if not cycle:
            return


def augmented_pairs(source: ImageSource, n: int, views, seed: int) -> Iterator[ViewPair]:
    """``n`` pairs of two augmented views of one image each (:func:`seeded_images`), the same for the same ``seed``.

    Each pair's views are drawn from the global torch generator seeded with
    its pair seed inside :func:`torch.random.fork_rng`, so the caller's random
    state is untouched.

    Args:
        source: images, e.g. from :func:`densecl.data.sources.image_source`.
        n: number of pairs, >= 1 (images repeat when it exceeds the readable ones).
        views: :class:`densecl.data.transforms.GeometricTwoViews`: two views of a
            PIL image and their geometry (so each match can be checked).
        seed: picks the images and the views.
    """
    for index, image, pair_seed in itertools.islice(seeded_images(source, seed), n):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(pair_seed)
            view1, view2, g1, g2 = views.views(image)
        yield ViewPair(view1, view2, image_name(source, index), (g1, g2))


def image_name(source: ImageSource, index: int) -> str:
    """A file path where the source has one, else ``origin[index]`` (embedded scenes)."""
    paths = getattr(source, "paths", None)
    return str(paths[index]) if paths is not None else f"{getattr(source, 'origin', 'image')}[{index}]"


# --------------------------------------------------------------------------- backbone


class Correspondence(NamedTuple):
    """All mutual matches of one view pair under one backbone, and the grids they index."""

    matches: Matches  # every mutual match, whatever its score
    grid1: tuple[int, int]  # h1, w1 of view 1's feature map
    grid2: tuple[int, int]  # h2, w2 of view 2's feature map


@torch.no_grad()
def unit_c5_features(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``N x 3 x H x W`` -> C5 features ``N x C x h x w``, L2-normalised along ``C`` (unit length at every location).

    Runs the backbone as it is: put it in eval mode first (BatchNorm running
    statistics, as in the paper's pre-trained models). Not to be confused with
    :func:`densecl.evaluation.features.dense_features`, which concatenates raw
    (unnormalised) maps of several stages for a probe to read.
    """
    return F.normalize(backbone(x), dim=1)


def correspond(backbone: nn.Module, pairs: Sequence[ViewPair]) -> list[Correspondence]:
    """Mutual matches of every pair, in one backbone forward pass on the backbone's device.

    All views of ``pairs`` must have one size (they are batched).
    """
    device = next(backbone.parameters()).device
    x = torch.stack([v for pair in pairs for v in (pair.view1, pair.view2)]).to(device)  # 2P x 3 x H x W
    f = unit_c5_features(backbone, x)  # 2P x C x h x w
    grid = tuple(f.shape[-2:])
    f = f.flatten(2).float().cpu()  # 2P x C x S
    return [Correspondence(mutual_matches(f[2 * p], f[2 * p + 1]), grid, grid) for p in range(len(pairs))]


def truth(pair: ViewPair, corr: Correspondence) -> torch.Tensor | None:
    """Per mutual match of ``corr``: 1 right (view 2's cell shows the point at view 1's cell centre),
    0 wrong, -1 no answer (view 2 does not show that point); None without the pair's geometry."""
    if pair.geometry is None:
        return None
    shown, cell, _ = corresponding_cells(*pair.geometry, corr.grid1, corr.grid2)
    right = (cell[corr.matches.idx1] == corr.matches.idx2).long()
    return torch.where(shown[corr.matches.idx1], right, -1)


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class MatchStats:
    """How many matches one backbone finds over a set of view pairs.

    Attributes:
        pairs: number of view pairs.
        locations: mean locations per view-1 feature map (``h * w``).
        mean_mutual: mean mutual matches per pair, any score.
        mean_kept: mean matches per pair with score >= ``threshold``.
        threshold: the score threshold.
        kept_per_pair: matches with score >= ``threshold``, pair by pair.
        histogram_edges: ``bins + 1`` edges over [0, 1]; the last bin includes 1.
        histogram_counts: mutual matches (all pairs) per bin; scores are clipped to
            [0, 1] first (C5 features are post-ReLU, so cosines are >= 0 anyway).
    """

    pairs: int
    locations: float
    mean_mutual: float
    mean_kept: float
    threshold: float
    kept_per_pair: tuple[int, ...]
    histogram_edges: tuple[float, ...]
    histogram_counts: tuple[int, ...]


def match_stats(results: Sequence[Correspondence], threshold: float, bins: int = 10) -> MatchStats:
    """Counts and a score histogram of the mutual matches of ``results`` (one backbone, many pairs)."""
    if not results:
        raise ValueError("match_stats needs at least one pair")
    scores = torch.cat([r.matches.score for r in results]).double().clamp(0.0, 1.0).numpy()
    counts, edges = np.histogram(scores, bins=bins, range=(0.0, 1.0))
    kept = tuple(len(r.matches.at_least(threshold).score) for r in results)
    return MatchStats(
        pairs=len(results),
        locations=float(np.mean([r.grid1[0] * r.grid1[1] for r in results])),
        mean_mutual=float(np.mean([len(r.matches.score) for r in results])),
        mean_kept=float(np.mean(kept)),
        threshold=threshold,
        kept_per_pair=kept,
        histogram_edges=tuple(round(float(e), 6) for e in edges),
        histogram_counts=tuple(int(c) for c in counts),
    )


def kept_right(pairs: Sequence[ViewPair], results: Sequence[Correspondence], threshold: float) -> float | None:
    """Mean number per pair of kept matches (score >= ``threshold``) that the views' geometry confirms; None
    when a pair has no geometry (two given images)."""
    counts = []
    for pair, result in zip(pairs, results):
        right = truth(pair, result)
        if right is None:
            return None
        counts.append(int(((right == 1) & (result.matches.score >= threshold)).sum()))
    return sum(counts) / len(counts)


def compare(
    backbones: dict[str, nn.Module], pairs: Iterator[ViewPair], chunk: int = 8
) -> tuple[list[ViewPair], dict[str, list[Correspondence]]]:
    """Every backbone's mutual matches on every pair, ``chunk`` pairs per forward pass.

    Returns:
        The pairs seen (the first is the picture's) and, per backbone label, one
        :class:`Correspondence` per pair.
    """
    seen: list[ViewPair] = []
    results: dict[str, list[Correspondence]] = {label: [] for label in backbones}
    with torch.inference_mode():
        while batch := list(itertools.islice(pairs, chunk)):
            seen.extend(batch)
            for label, backbone in backbones.items():
                results[label].extend(correspond(backbone, batch))
    return seen, results


def stats_tables(stats: dict[str, MatchStats]) -> str:
    """Matches per pair for each backbone, then the histogram of mutual-match scores (Markdown, padded)."""
    from densecl.tables import markdown_table

    threshold = next(iter(stats.values())).threshold
    summary = markdown_table(
        ["weights", "pairs", "locations", "mutual/pair", f">={threshold:g}/pair"],
        [
            [label, s.pairs, f"{s.locations:.0f}", f"{s.mean_mutual:.2f}", f"{s.mean_kept:.2f}"]
            for label, s in stats.items()
        ],
    )
    edges = next(iter(stats.values())).histogram_edges
    histogram = markdown_table(
        ["mutual-match score", *stats],
        [
            [f"{edges[b]:.1f}-{edges[b + 1]:.1f}", *(s.histogram_counts[b] for s in stats.values())]
            for b in range(len(edges) - 1)
        ],
    )
    return f"{summary}\n\n{histogram}"


def given_pair(
    image1: Image.Image, image2: Image.Image, crop: int, name: str, inputs: InputSpec | None = None
) -> ViewPair:
    """Two given photos as they are, each squashed to ``crop x crop`` and normalised as ``inputs`` (the weights'
    input; ImageNet's photos by default) says; no known geometry."""
    from torchvision.transforms import v2

    inputs = inputs or InputSpec()
    squash = v2.Resize((crop, crop), antialias=True)  # the whole image, squashed to a square
    return ViewPair(*(inputs.finish_photo(squash(v2.functional.to_image(im))) for im in (image1, image2)), name)
