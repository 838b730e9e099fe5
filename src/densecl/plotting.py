"""Pictures: training curves from ``metrics.jsonl``, and the dense-correspondence figure.

Matplotlib (a dependency of the package) is used through its
object API (``Figure``, no pyplot), so nothing here touches a global backend or
opens a window; files are written by the Agg renderer::

    densecl plot runs/densecl_r18 runs/mocov2_r18 --out curves.png
    densecl correspond --weights a.pth --weights b.pth --image cat.jpg --out cat.png
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from densecl import matches
from densecl.data.geometry import cell_centres
from densecl.errors import InputError
from densecl.inputs import InputSpec
from densecl.matches import Correspondence, ViewPair

#: the panels of :func:`plot_curves`: metrics key -> axis title
CURVES = {
    "loss": "loss (total)",
    "loss_global": "loss_global (InfoNCE, pooled)",
    "loss_dense": "loss_dense (InfoNCE, dense)",
    "acc_global": "acc_global: top-1 of the global task, %",
    "acc_dense": "acc_dense: top-1 of the dense task, %",
    "lr": "learning rate",
}


def require_matplotlib() -> None:
    """Raises InputError (what to install) when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise InputError("drawing needs matplotlib; pip install matplotlib") from e


def _figure(**kwargs: Any):
    require_matplotlib()
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=fig.dpi)
    return path


# --------------------------------------------------------------------------- training curves


def metrics_file(run: str | Path) -> Path:
    """A run directory's ``metrics.jsonl`` (a path to the file itself is accepted too)."""
    run = Path(run)
    return run if run.suffix == ".jsonl" else run / "metrics.jsonl"


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    """The per-step lines of a run's ``metrics.jsonl``, in step order.

    Per-epoch lines (no ``loss``) are left out. A resumed run logs the steps
    after its checkpoint again; the later line of a step wins. A truncated last
    line (a run killed while writing) is skipped with a warning.

    Raises:
        InputError: the file is missing or empty, a line other than the last is
            not JSON, or no line has a loss.
    """
    path = metrics_file(run)
    if not path.is_file():
        raise InputError(f"{path} does not exist; pass a training run directory (one holding metrics.jsonl)")
    lines = [(n, line) for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    if not lines:
        raise InputError(f"{path} is empty; the run has not logged a step yet (see log_every in its config)")
    by_step: dict[int, dict[str, Any]] = {}
    for n, line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if n == lines[-1][0]:
                print(f"densecl: warning: skipping the truncated last line {n} of {path}", file=sys.stderr)
                continue
            raise InputError(f"{path}, line {n}, is not JSON ({e}); fix or delete that line") from None
        if isinstance(record, dict) and "loss" in record and "step" in record:
            by_step[int(record["step"])] = record
    if not by_step:
        raise InputError(f"{path} has no step lines with a loss (only per-epoch lines); log more often or train longer")
    return [by_step[s] for s in sorted(by_step)]


def run_labels(runs: Sequence[str | Path]) -> list[str]:
    """Directory names; the paths as given where two names are the same."""
    dirs = [metrics_file(r).parent for r in runs]
    names = [d.resolve().name or str(d) for d in dirs]
    return [n if names.count(n) == 1 else str(d) for n, d in zip(names, dirs)]


def plot_curves(runs: Sequence[tuple[str, Sequence[dict[str, Any]]]], out: str | Path) -> Path:
    """Loss (total, global, dense), the two tasks' top-1 accuracy and the learning rate against step, one line per run.

    Runs logged before the accuracies were (no ``acc_*`` keys) leave those panels empty.

    Args:
        runs: ``(label, records)``, records as :func:`read_metrics` returns them.
        out: image file to write (.png, .pdf, .svg).

    Returns:
        The path written.
    """
    fig = _figure(figsize=(15, 7), dpi=100, layout="constrained")
    axes = fig.subplots(2, 3, sharex=True).flatten()
    for ax, (key, title) in zip(axes, CURVES.items()):
        for n, (label, records) in enumerate(runs):
            points = [(r["step"], r[key]) for r in records if _finite(r.get(key))]
            if points:
                steps, values = zip(*points)
                ax.plot(
                    steps, values, label=label, color=f"C{n}", linewidth=1.2, marker="." if len(points) < 30 else None
                )
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if key == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for ax in axes[3:]:
        ax.set_xlabel("step")
    axes[0].legend(loc="best", fontsize="small")
    return _save(fig, out)


def plot_accuracy_by_radius(
    rows: Sequence[tuple[str, Sequence[float], Sequence[float], Sequence[float]]],
    stages: Sequence[str],
    out: str | Path,
) -> Path:
    """Correspondence accuracy against pixel radius, one panel per stage, one line per backbone.

    Args:
        rows: ``(label, radii, mean, spread)`` per backbone and stage, in ``stages`` order
            (``len(rows)`` is a multiple of ``len(stages)``); values are fractions, drawn as
            percent; ``spread`` (e.g. the std over pre-training seeds) is a shaded band.
        stages: panel titles, e.g. ``("C4", "C5")``.
        out: image file to write.
    """
    fig = _figure(figsize=(5.2 * len(stages), 4), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(stages), squeeze=False)[0]
    per_stage = len(rows) // len(stages)
    for k, (ax, stage) in enumerate(zip(axes, stages)):
        for n, (label, radii, mean, spread) in enumerate(rows[k * per_stage : (k + 1) * per_stage]):
            r, m, sd = (np.asarray(v, dtype=float) for v in (radii, mean, spread))
            ax.plot(r, 100 * m, marker="o", color=f"C{n}", label=label)
            ax.fill_between(r, 100 * (m - sd), 100 * (m + sd), color=f"C{n}", alpha=0.2, linewidth=0)
        ax.set_title(f"{stage}: the matched cell's centre within r pixels of the true point", fontsize="small")
        ax.set_xlabel("r (view pixels)")
        ax.set_ylabel("query cells (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize="small")
    return _save(fig, out)


def draw_masks(rows: Sequence[tuple[str, dict[str, np.ndarray]]], out: str | Path) -> Path:
    """Val images, their ground truth and each backbone's predicted masks, one column per image.

    Args:
        rows: ``(label, masks)`` per backbone, ``masks`` as ``densecl eval dense-nn --masks-out``
            writes them (``images``, ``labels``, ``predictions``, ``classes``); the first row's
            images and labels head the picture.
        out: image file to write.
    """
    from densecl.formats.voc import palette

    colours = np.array(palette(), dtype=np.uint8).reshape(256, 3)
    first = rows[0][1]
    n = len(first["images"])
    lines = [("image", list(first["images"])), ("ground truth", [colours[y] for y in first["labels"]])]
    lines += [(label, [colours[p] for p in masks["predictions"][:n]]) for label, masks in rows]
    fig = _figure(figsize=(2.2 * n, 2.2 * len(lines) + 0.6), dpi=100, layout="constrained")
    axes = fig.subplots(len(lines), n, squeeze=False)
    for (label, pictures), row in zip(lines, axes):
        for ax, picture in zip(row, pictures):
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(label, fontsize="small")
    from matplotlib.patches import Patch

    handles = [Patch(color=colours[k] / 255, label=str(name)) for k, name in enumerate(first["classes"])]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 8), fontsize="small", frameon=False)
    return _save(fig, out)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


# --------------------------------------------------------------------------- correspondence


def to_display(view: torch.Tensor, inputs: InputSpec | None = None) -> np.ndarray:
    """A ``3 x H x W`` photo view normalised as ``inputs`` says (ImageNet's by default) -> ``H x W x 3`` float RGB
    in [0, 1]."""
    x = (inputs or InputSpec()).denormalise(view.detach().cpu().float())
    return x.clamp(0, 1).permute(1, 2, 0).numpy()


def draw_correspondence(
    pair: ViewPair,
    rows: Sequence[tuple[str, Correspondence]],
    threshold: float,
    out: str | Path,
    title: str | None = None,
    inputs: InputSpec | None = None,
) -> Path:
    """The two views side by side, one row per backbone, matches with score >= ``threshold`` as lines.

    Lines join the centres of the matched feature cells; the faint grid shows
    the feature cells. Supplementary Figure 1, with one addition: when the
    pair's geometry is known, a line is green where view 2's cell really shows
    the point at view 1's cell centre, red where it does not, grey where view 2
    does not show that point at all (confidence is not correctness); else
    lines are coloured by score.

    Args:
        pair: the views all rows share.
        rows: ``(label, correspondence)`` per backbone; the label heads the row.
        threshold: lowest score drawn.
        out: image file to write (.png, .pdf, .svg).
        title: a line above all rows.
    """
    im1, im2 = to_display(pair.view1, inputs), to_display(pair.view2, inputs)
    (h1, w1), (h2, w2) = im1.shape[:2], im2.shape[:2]
    gap = max(8, w1 // 16)
    canvas = np.ones((max(h1, h2), w1 + gap + w2, 3))
    canvas[:h1, :w1], canvas[:h2, w1 + gap :] = im1, im2
    width = 9.0
    row_height = width * canvas.shape[0] / canvas.shape[1] + 0.5
    fig = _figure(figsize=(width + 1.2, row_height * len(rows) + (0.4 if title else 0)), dpi=100, layout="constrained")
    from matplotlib import colormaps  # importable: _figure checked
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize, to_rgba
    from matplotlib.lines import Line2D

    norm = Normalize(vmin=min(threshold, 1.0 - 1e-3), vmax=1.0)
    cmap = colormaps["plasma"]
    verdicts = {1: ("right", "#1a9850"), 0: ("wrong", "#d73027"), -1: ("not in view 2", "#9e9e9e")}
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, (label, corr) in zip(axes, rows):
        ax.imshow(canvas, interpolation="bilinear")
        _draw_grid(ax, corr.grid1, (h1, w1), 0)
        _draw_grid(ax, corr.grid2, (h2, w2), w1 + gap)
        keep = corr.matches.score >= threshold
        kept = corr.matches.at_least(threshold)
        order = kept.score.argsort()  # best matches drawn last, on top
        start = cell_centres(corr.grid1, (h1, w1))[kept.idx1[order]]  # M x 2
        end = cell_centres(corr.grid2, (h2, w2))[kept.idx2[order]] + torch.tensor([w1 + gap, 0.0])  # M x 2
        truth = matches.truth(pair, corr)
        if truth is None:  # no geometry (two given images): colour by score
            colours = cmap(norm(kept.score[order].numpy()))
        else:  # green where the geometry confirms the match
            colours = np.array([to_rgba(verdicts[int(t)][1]) for t in truth[keep][order]]).reshape(-1, 4)
        bow = _bows(kept.idx1[order], corr.grid1, h1)  # M: matches of one row would lie on one straight line
        curves = match_arcs(start.numpy(), end.numpy(), bow)  # M x P x 2
        ax.add_collection(LineCollection(curves, colors=colours, linewidths=1.4, alpha=0.9))
        ends = np.concatenate([start.numpy(), end.numpy()])
        ax.scatter(*ends.T, s=8, c=np.concatenate([colours, colours]), zorder=3)
        ax.set_title(label, fontsize="medium")
        ax.set_xlim(-0.5, canvas.shape[1] - 0.5)
        ax.set_ylim(canvas.shape[0] - 0.5, -0.5)
        ax.set_axis_off()
    if pair.geometry is None:
        fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=list(axes), label="match score (cosine)", shrink=0.8)
    else:
        handles = [
            Line2D([], [], color=c, linewidth=2, label=f"{name} (by the views' geometry)")
            for name, c in verdicts.values()
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize="small", frameon=False)
    if title:
        fig.suptitle(title, fontsize="small")
    return _save(fig, out)


def match_arcs(start: np.ndarray, end: np.ndarray, bow: np.ndarray, points: int = 24) -> np.ndarray:
    """Quadratic Bezier arcs from ``start`` to ``end`` (both ``M x 2``, x then y): ``M x points x 2``.

    The control point sits ``bow`` (``M``, in pixels, + = down) below the
    chord's midpoint, so each arc passes ``bow / 2`` from it halfway.
    """
    t = np.linspace(0.0, 1.0, points)[None, :, None]  # 1 x P x 1
    control = (start + end) / 2 + np.stack([np.zeros_like(bow), bow], axis=1)  # M x 2
    a, c, b = start[:, None], control[:, None], end[:, None]  # M x 1 x 2
    return (1 - t) ** 2 * a + 2 * (1 - t) * t * c + t**2 * b


def _bows(idx1: torch.Tensor, grid: tuple[int, int], height: int) -> np.ndarray:
    """Per match, how far its arc bends: by the query cell's column, towards the middle of the view."""
    h, w = grid
    row, col = (idx1 // w).numpy(), (idx1 % w).numpy()
    size = height * (0.06 + 0.3 * (col + 0.5) / w)  # different columns of one row bend differently
    return np.where(row < h / 2, size, -size)  # never out of the picture


def _draw_grid(ax, grid: tuple[int, int], size: tuple[int, int], x0: float) -> None:
    (h, w), (height, width) = grid, size
    for i in range(1, h):
        ax.plot([x0, x0 + width], [i * height / h] * 2, color="white", alpha=0.25, linewidth=0.5)
    for j in range(1, w):
        ax.plot([x0 + j * width / w] * 2, [0, height], color="white", alpha=0.25, linewidth=0.5)
