"""docs/results.md for ``make experiment`` (scripts/experiment.sh): DenseCL against MoCo-v2.

The script calls :func:`write_report` at its end::

    python -c 'from densecl.experiment_report import write_report; write_report("runs/experiment", "docs/results.md", "docs/figures")'

:func:`collect` reads what the run left (eval result JSONs, the correspondence report, the
timing log, the settings line), :func:`render` turns that into Markdown and touches nothing,
and :func:`write_report` also copies the figures, shrunk, next to the report. A result that is
missing or unreadable shows as "—"; the report is written whatever is there.

Everything from :data:`ANALYSIS_MARKER` to the end of an existing report is written by hand (the
analysis of the numbers) and is kept when the report is rewritten.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MISSING = "—"

# (file prefix, row label)
WEIGHTS = (("densecl", "DenseCL"), ("mocov2", "MoCo-v2"), ("random", "random init"))
# (file suffix, headline metric, column title)
PROTOCOLS = (
    ("seg-probe", "mIoU", "seg-probe mIoU (C4+C5)"),
    ("seg-finetune", "mIoU", "seg-finetune mIoU"),
    ("det-box", "bbox_AP", "det box AP"),
    ("det-box-10pct", "bbox_AP", "det box AP, 10 % labels"),
    ("svm", "mAP", "SVM mAP"),
)
# (figure file in RUN/figures, caption)
FIGURES = (
    ("correspondence.png", "Dense correspondences between two views, first test pair (supplementary Figure 1 style)"),
    ("curves.png", "Pre-training loss and learning rate, DenseCL and MoCo-v2"),
)
FIGURE_MAX_SIDE = 1200  # pixels; docs/ keeps small PNGs
ANALYSIS_MARKER = "<!-- analysis: written by hand below this line; make experiment keeps it -->"
NO_ANALYSIS = "## Analysis\n\nNot written yet: read the tables above against the paper (docs/densecl-spec.md, section 4).\n"


@dataclass
class ReportInputs:
    """Everything the report shows; each part may be empty."""

    records: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (weights, protocol) -> eval JSON
    correspondence: dict[str, Any] | None = None  # the report `densecl correspond` wrote
    timings: list[tuple[str, float]] = field(default_factory=list)  # (step, seconds), one per run of a step
    settings: dict[str, str] = field(default_factory=dict)  # EPOCHS=..., as the script resolved them
    machine: dict[str, str] = field(default_factory=dict)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (link relative to the report, caption)


# ------------------------------------------------------------------ pure formatting


def metric_cell(record: dict[str, Any] | None, metric: str) -> str:
    """``"81.20"``, ``"81.20 ± 0.30"`` with several seeds, or "—" when absent."""
    try:
        m = record["metrics"][metric]  # type: ignore[index]
        mean = float(m["mean"])
    except (TypeError, KeyError, ValueError):
        return MISSING
    if len(m.get("per_seed") or []) > 1:
        return f"{mean:.2f} ± {float(m.get('std') or 0.0):.2f}"
    return f"{mean:.2f}"


def _mean(record: dict[str, Any] | None, metric: str) -> float | None:
    try:
        return float(record["metrics"][metric]["mean"])  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        return None


def table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(
        ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
        + ["| " + " | ".join(row) + " |" for row in rows]
    )


def results_table(records: dict[tuple[str, str], dict[str, Any]]) -> str:
    """One row per weights, one column per protocol, plus DenseCL − MoCo-v2 (test split, percent)."""
    rows = [[label, *(metric_cell(records.get((w, p)), m) for p, m, _ in PROTOCOLS)] for w, label in WEIGHTS]
    diff = []
    for p, m, _ in PROTOCOLS:
        a, b = _mean(records.get(("densecl", p)), m), _mean(records.get(("mocov2", p)), m)
        if a is None or b is None:
            diff.append(MISSING)
        else:
            d = a - b if round(a - b, 2) else 0.0  # "+0.00", never "-0.00"
            diff.append(f"{d:+.2f}")
    rows.append(["DenseCL − MoCo-v2", *diff])
    return table(["weights", *(title for _, _, title in PROTOCOLS)], rows)


def correspondence_table(report: dict[str, Any] | None) -> str:
    """Per weights: pairs, mutual matches per pair, matches >= threshold per pair."""
    if not report or not report.get("weights"):
        return f"{MISSING} (no correspondence report yet)"
    threshold = report.get("threshold", 0.9)
    rows = []
    for w in report["weights"]:
        rows.append([
            str(w.get("label", MISSING)),
            str(w.get("pairs", MISSING)),
            str(w.get("locations_per_view", MISSING)),
            _number(w.get("mean_mutual_per_pair")),
            _number(w.get("mean_kept_per_pair")),
        ])
    return table(["weights", "view pairs", "locations per view", "mutual matches / pair", f"matches >= {threshold:g} / pair"], rows)


def _number(x: Any) -> str:
    return MISSING if x is None else f"{float(x):.2f}"


def picture_sources(correspondence: dict[str, Any] | None) -> str | None:
    """Background and cut-outs of the pictured image, from the ``manifest.json`` of its photo-scenes folder."""
    try:
        picture = Path(correspondence["first_pair"]).resolve()  # type: ignore[index]
    except (TypeError, KeyError):
        return None
    image = picture.stem
    for folder in picture.parents:
        manifest = _read_json(folder / "manifest.json")
        if manifest is not None:
            break
    else:
        return None
    entry = next((e for e in manifest.get("images", []) if e.get("name") == image), None)
    if entry is None:
        return None
    cutouts = ", ".join(f"`{o['cutout']}`" for o in entry.get("objects", []))
    return f"`{image}`, background `{entry.get('background')}` (mate-backgrounds), cut-outs {cutouts} (tuxpaint-stamps-default)"


def timing_table(timings: list[tuple[str, float]]) -> str:
    """Wall time per step (runs of a resumed step are added up) and the total."""
    if not timings:
        return f"{MISSING} (no step has finished yet)"
    totals: dict[str, float] = {}
    for name, seconds in timings:
        totals[name] = totals.get(name, 0.0) + seconds
    rows = [[name, f"{s / 60:.1f}"] for name, s in totals.items()]
    rows.append(["**total**", f"**{sum(totals.values()) / 60:.1f}**"])
    return table(["step", "wall time (min)"], rows)


def render(inputs: ReportInputs) -> str:
    """The whole of docs/results.md."""
    settings = " ".join(f"{k}={v}" for k, v in inputs.settings.items())
    given = lambda key, default: inputs.settings.get(key, default)  # noqa: E731
    machine = ", ".join(f"{k} {v}" for k, v in inputs.machine.items()) or MISSING
    figures = "\n\n".join(f"![{caption}]({link})\n\n*{caption}.*" for link, caption in inputs.figures)
    return "\n".join([
        "# DenseCL against MoCo-v2 on the photo scenes",
        "",
        "Written by `make experiment` (`scripts/experiment.sh`, report by `densecl.experiment_report`).",
        "DenseCL (lambda = 0.5) and MoCo-v2 (lambda = 0) are pre-trained with everything else identical",
        f"({given('ARCH', 'resnet18')}, hidden 512, crop {given('CROP', '128')}, batch {given('BATCH', '32')}, "
        f"{given('EPOCHS', '?')} epochs, queues {given('QUEUE', '?')}, EMA momentum 0.99,",
        f"lr 0.3 for 256, seed 0) on the train images of `densecl data scenes --n {given('N_IMAGES', '2000')} "
        f"--size {given('SIZE', '160')} --seed 0`",
        "(docs/photo-scenes.md), then evaluated with random init alongside. One pre-training run per",
        "method, so the spread over pre-training seeds is not measured here.",
        "",
        "```bash",
        "make experiment" if not settings else f"{settings} make experiment",
        "```",
        "",
        f"Machine: {machine}.",
        "",
        "## Transfer (test split, percent)",
        "",
        "seg-probe: 3 seeds (mean ± std); the others one seed. Short CPU schedules (see the script",
        "for the flags): these numbers compare the two methods here, not with the paper.",
        "",
        results_table(inputs.records),
        "",
        "## Dense correspondence",
        "",
        "Mutual nearest neighbours of C5 features between two random crop-and-flip views of test images.",
        "",
        correspondence_table(inputs.correspondence),
        "",
        "## Figures",
        "",
        figures or f"{MISSING} (no figure yet)",
        "",
        "The correspondence picture shows a composed scene: "
        + (picture_sources(inputs.correspondence) or "cut-outs from tuxpaint-stamps-default on a mate-backgrounds photo")
        + ". Made from GPL-2 works, it is licensed GPL-2, unlike the Apache-2.0 code (docs/figures/README.md).",
        "",
        "## Wall time",
        "",
        timing_table(inputs.timings),
        "",
    ])


def keep_analysis(generated: str, previous: str | None) -> str:
    """``generated`` followed by the hand-written part of ``previous`` (from the marker on), or a placeholder."""
    if previous is not None and ANALYSIS_MARKER in previous:
        return generated + previous[previous.index(ANALYSIS_MARKER):]
    return f"{generated}{ANALYSIS_MARKER}\n\n{NO_ANALYSIS}"


# ------------------------------------------------------------------ reading the run


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_timings(path: Path) -> list[tuple[str, float]]:
    """``name<TAB>seconds<TAB>finished at`` lines; malformed lines are skipped."""
    out = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split("\t")
        try:
            out.append((parts[0], float(parts[1])))
        except (IndexError, ValueError):
            continue
    return out


def read_settings(path: Path) -> dict[str, str]:
    try:
        return dict(word.split("=", 1) for word in shlex.split(path.read_text()) if "=" in word)
    except (OSError, ValueError):
        return {}


def machine_info() -> dict[str, str]:
    import torch

    return {
        "cpu": _cpu_model() or platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "cores": str(os.cpu_count()),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def collect(run_dir: str | os.PathLike) -> ReportInputs:
    """What the run in ``run_dir`` has written so far (figures are filled in by :func:`write_report`)."""
    run = Path(run_dir)
    records = {}
    for w, _ in WEIGHTS:
        for p, _, _ in PROTOCOLS:
            record = _read_json(run / "eval" / f"{w}_{p}.json")
            if record is not None:
                records[(w, p)] = record
    return ReportInputs(
        records=records,
        correspondence=_read_json(run / "figures" / "correspondence.json"),
        timings=read_timings(run / "timing.tsv"),
        settings=read_settings(run / "settings.txt"),
        machine=machine_info(),
    )


def shrink_copy(src: Path, dst: Path, max_side: int = FIGURE_MAX_SIDE) -> None:
    """Copies a PNG, scaled down so that its longer side is at most ``max_side``, with 256 colours."""
    from densecl.images import open_rgb

    dst.parent.mkdir(parents=True, exist_ok=True)
    with open_rgb(src, what="figure") as im:
        im.thumbnail((max_side, max_side))
        im.convert("RGB").quantize(256).save(dst, optimize=True)  # a 256-colour palette: a few times smaller


def write_report(run_dir: str | os.PathLike, out: str | os.PathLike, figures_dir: str | os.PathLike) -> Path:
    """Collects ``run_dir``, copies its figures into ``figures_dir`` and writes the report to ``out``."""
    run, out, figures_dir = Path(run_dir), Path(out), Path(figures_dir)
    inputs = collect(run)
    for name, caption in FIGURES:
        src = run / "figures" / name
        if src.exists():
            dst = figures_dir / name
            shrink_copy(src, dst)
            inputs.figures.append((os.path.relpath(dst, out.parent), caption))
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = out.read_text() if out.exists() else None
    out.write_text(keep_analysis(render(inputs), previous))
    return out
