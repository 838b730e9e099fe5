"""docs/results-1050-steps.md for scripts/experiment.sh: DenseCL against MoCo-v2 over seeds at 1050 steps.

    python scripts/experiment_report.py --run runs/study --data .cache/study-scenes --out docs/results-1050-steps.md \\
        --figures docs/figures

Reads what the run left: ``RUN/eval/<backbone>_<protocol>.json`` (``densecl-s0``,
``mocov2-s0``, ..., the ablations, ``random``, ``reference``, ``oracle``), the pre-training
settings from the checkpoints' stored configs, or a record's ``checkpoint-info.json`` (and checks that DenseCL and
MoCo-v2 differ in lambda and nothing else), ``RUN/timing.tsv`` and the
machine. A result not there yet shows as "—"; the report is written from
whatever exists. Everything below :data:`ANALYSIS_MARKER` in an existing
report is written by hand and kept.

Statistics: a method's cell is the mean ± standard deviation over its
pre-training seeds; DenseCL − MoCo-v2 pairs the runs of one seed (same
initial weights and data order) and gives the mean difference with a 95 %
t-interval over seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MISSING = "—"
METHODS = (("densecl", "DenseCL"), ("mocov2", "MoCo-v2"))
SINGLES = (("random", "random init"), ("reference", "supervised reference"), ("oracle", "oracle (saw test labels)"))
# (protocol, metric, column title, scale to percent)
HEADLINE = (
    ("correspondence", "c5_accuracy", "C5 match accuracy", 100),
    ("correspondence", "c5_within_32", "C5 within 32 px", 100),
    ("correspondence", "c4_accuracy", "C4 match accuracy", 100),
    ("dense-nn", "mIoU", "dense-nn mIoU", 1),
    ("overcluster", "mIoU", "over-clustering mIoU", 1),
    ("seg-probe", "mIoU", "seg-probe mIoU", 1),
    ("svm", "mAP", "SVM mAP", 1),
)
CORRESPONDENCE = (
    ("accuracy", "accuracy", 100),
    ("same_cell_baseline", "'same place' baseline", 100),
    ("within_16", "within 16 px", 100),
    ("within_32", "within 32 px", 100),
    ("within_64", "within 64 px", 100),
    ("mutual_precision", "mutual NN precision", 100),
    ("mutual_recall", "mutual NN recall", 100),
    ("true_similarity", "cos to the true cell", 1),
    ("best_false_similarity", "cos to the best other cell", 1),
    ("margin", "margin", 1),
    ("within_view_similarity", "cos between cells of one view", 1),
    ("confident", "matches >= 0.9 per pair", 1),
    ("confident_correct", "of them correct", 1),
)
FIGURE_MAX_SIDE = 1200  # pixels; docs/ keeps small PNGs
ANALYSIS_MARKER = "<!-- analysis: written by hand below this line; make experiment keeps it -->"
NO_ANALYSIS = "## Analysis\n\nNot written yet.\n"


# ------------------------------------------------------------------ statistics


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    return mean, (math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0)


def paired_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float | None]:
    """Mean of ``a_i - b_i`` and the half-width of its ``level`` t-interval (None for one pair)."""
    diffs = [x - y for x, y in zip(a, b)]
    mean, sd = mean_std(diffs)
    if len(diffs) < 2:
        return mean, None
    from scipy.stats import t

    return mean, float(t.ppf((1 + level) / 2, len(diffs) - 1)) * sd / math.sqrt(len(diffs))


# ------------------------------------------------------------------ reading the run


@dataclass
class Study:
    """What the run has written so far."""

    records: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (backbone, protocol) -> eval JSON
    seeds: list[int] = field(default_factory=list)  # seeds with both a DenseCL and a MoCo-v2 run evaluated
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # run name -> stored pre-training config
    timings: list[tuple[str, float]] = field(default_factory=list)
    machine: str = MISSING  # where the study ran: RUN/MACHINE
    figures: list[tuple[str, str]] = field(default_factory=list)  # (link relative to the report, caption)


def collect(run: Path) -> Study:
    study = Study(machine=recorded_machine(run) or f"not recorded ({machine_info()} wrote this report)")
    for path in sorted((run / "eval").glob("*_*.json")):
        name, protocol = path.stem.split("_", 1)
        record = _read_json(path)
        if record is not None:
            study.records[(name, protocol)] = record
    seeds = {int(m.group(2)) for name, _ in study.records if (m := re.fullmatch(r"(densecl|mocov2)-s(\d+)", name))}
    study.seeds = sorted(
        s
        for s in seeds
        if any(n == f"densecl-s{s}" for n, _ in study.records) and any(n == f"mocov2-s{s}" for n, _ in study.records)
    )
    for folder in sorted(p for p in run.iterdir() if p.is_dir()):
        config = _stored_config(folder)
        if config is not None:
            study.configs[folder.name] = config
    study.timings = read_timings(run / "timing.tsv")
    return study


def _stored_config(folder: Path) -> dict[str, Any] | None:
    """A run's pre-training config, read as a run reads it (a setting it predates has its default): from its
    ``checkpoint.pt``, else from the ``checkpoint-info.json`` a study's record keeps; None for neither."""
    from densecl import checkpoint, config

    if (folder / "checkpoint.pt").exists():
        path, stored = folder / "checkpoint.pt", checkpoint.load(folder / "checkpoint.pt").config
    elif (info := _read_json(folder / "checkpoint-info.json")) is not None and isinstance(info.get("config"), dict):
        path, stored = folder / "checkpoint-info.json", info["config"]
    else:
        return None
    return dataclasses.asdict(config.from_dict(stored, str(path)))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_timings(path: Path) -> list[tuple[str, float]]:
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


def recorded_machine(run: Path) -> str | None:
    """The machines ``RUN/MACHINE`` lists (each that ran a step of the study), or None."""
    path = run / "MACHINE"
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return "; ".join(lines) or None


def machine_info() -> str:
    """This machine, as a study's ``RUN/MACHINE`` describes one (a report written elsewhere must not claim it)."""
    import torch

    cpu = None
    try:
        cpu = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            None,
        )
    except OSError:
        pass
    return f"cpu {cpu or platform.processor() or platform.machine()}, cores {os.cpu_count()}, torch {torch.__version__}"


# ------------------------------------------------------------------ tables


def value(study: Study, name: str, protocol: str, metric: str) -> float | None:
    try:
        v = study.records[(name, protocol)]["metrics"][metric]["mean"]
    except KeyError:
        return None
    return None if v is None else float(v)


def _per_seed(study: Study, method: str, protocol: str, metric: str) -> list[float] | None:
    values = [value(study, f"{method}-s{s}", protocol, metric) for s in study.seeds]
    return None if not values or any(v is None for v in values) else values  # type: ignore[return-value]


def method_cell(study: Study, method: str, protocol: str, metric: str, scale: float) -> str:
    values = _per_seed(study, method, protocol, metric)
    if values is None:
        return MISSING
    mean, sd = mean_std([scale * v for v in values])
    return f"{mean:.2f} ± {sd:.2f}" if len(values) > 1 else f"{mean:.2f}"


def single_cell(study: Study, name: str, protocol: str, metric: str, scale: float) -> str:
    v = value(study, name, protocol, metric)
    return MISSING if v is None else f"{scale * v:.2f}"


def difference_cell(
    study: Study, protocol: str, metric: str, scale: float, a_name: str = "densecl", b_name: str = "mocov2"
) -> str:
    """``a_name`` − ``b_name`` paired by seed, with its 95 % t-interval."""
    a, b = _per_seed(study, a_name, protocol, metric), _per_seed(study, b_name, protocol, metric)
    if a is None or b is None:
        return MISSING
    mean, half = paired_interval([scale * v for v in a], [scale * v for v in b])
    if half is None:
        return f"{_signed(mean)} (one seed)"
    return f"{_signed(mean)} [{_signed(mean - half)}, {_signed(mean + half)}]"


def verdict(
    study: Study,
    protocol: str,
    metric: str,
    a_name: str = "densecl",
    b_name: str = "mocov2",
    labels=("DenseCL", "MoCo-v2"),
) -> str:
    a, b = _per_seed(study, a_name, protocol, metric), _per_seed(study, b_name, protocol, metric)
    if a is None or b is None or len(a) < 2:
        return MISSING
    mean, half = paired_interval(a, b)
    higher = sum(x > y for x, y in zip(a, b))
    seeds = f"{labels[0]} higher on {higher} of {len(a)} seeds"
    if half is None or abs(mean) <= half:
        return f"no difference resolved ({seeds})"
    return f"{labels[0] if mean > 0 else labels[1]} higher ({seeds})"


def above_floor_cell(study: Study, method: str, protocol: str, metric: str) -> str:
    """On how many seeds ``method`` scores above random init (the floor)."""
    values, floor = _per_seed(study, method, protocol, metric), value(study, "random", protocol, metric)
    if values is None or floor is None:
        return MISSING
    return f"{sum(v > floor for v in values)} of {len(values)}"


def _signed(x: float) -> str:
    return f"{x:+.2f}" if round(x, 2) else "+0.00"


def headline_table(study: Study) -> str:
    from densecl.tables import markdown_table

    n = len(study.seeds)
    rows = [
        [f"{label} ({n} seeds)", *(method_cell(study, m, p, k, s) for p, k, _, s in HEADLINE)] for m, label in METHODS
    ]
    rows.append(["DenseCL − MoCo-v2, 95 % CI", *(difference_cell(study, p, k, s) for p, k, _, s in HEADLINE)])
    rows.append(["verdict", *(verdict(study, p, k) for p, k, _, _ in HEADLINE)])
    rows += [[label, *(single_cell(study, name, p, k, s) for p, k, _, s in HEADLINE)] for name, label in SINGLES]
    return markdown_table(["backbone", *(title for _, _, title, _ in HEADLINE)], rows, padded=False)


def correspondence_table(study: Study, stage: str) -> str:
    from densecl.tables import markdown_table

    rows = []
    for key, title, scale in CORRESPONDENCE:
        metric = f"{stage}_{key}"
        rows.append(
            [
                title,
                *(method_cell(study, m, "correspondence", metric, scale) for m, _ in METHODS),
                difference_cell(study, "correspondence", metric, scale),
                *(single_cell(study, name, "correspondence", metric, scale) for name, _ in SINGLES),
            ]
        )
    return markdown_table(
        ["", *(label for _, label in METHODS), "DenseCL − MoCo-v2", *(label for _, label in SINGLES)],
        rows,
        padded=False,
    )


def memory_table(study: Study) -> str:
    from densecl.tables import markdown_table

    sizes = sorted(
        {k for (_, p), r in study.records.items() if p == "dense-nn" for k in r["metrics"] if k.startswith("mIoU@")},
        key=lambda k: int(k[5:]),
    )
    if not sizes:
        return f"{MISSING} (no dense-nn result yet)"
    rows = [[label, *(method_cell(study, m, "dense-nn", k, 1) for k in sizes)] for m, label in METHODS]
    rows.append(["DenseCL − MoCo-v2", *(difference_cell(study, "dense-nn", k, 1) for k in sizes)])
    rows += [[label, *(single_cell(study, name, "dense-nn", k, 1) for k in sizes)] for name, label in SINGLES]
    return markdown_table(["backbone", *(f"memory {k[5:]} patches" for k in sizes)], rows, padded=False)


def ablations(study: Study, seed: int) -> list[str]:
    """The ablation runs of ``seed``: ``densecl-<what>-s<seed>``, grouped batch norm (``-bnN``) aside, in name order."""
    names = {n for n in study.configs} | {n for n, _ in study.records}
    return sorted(n for n in names if re.fullmatch(rf"densecl-(?!bn\d+-)[a-z0-9]+-s{seed}", n))


def ablation_table(study: Study) -> str:
    from densecl.tables import markdown_table

    first = study.seeds[0] if study.seeds else 0
    base = study.configs.get(f"densecl-s{first}")
    labels = [(f"densecl-s{first}", "DenseCL (paper)"), (f"mocov2-s{first}", "MoCo-v2")]
    labels += [(name, _ablation_label(name, study.configs.get(name), base)) for name in ablations(study, first)]
    rows = [[label, *(single_cell(study, name, p, k, s) for p, k, _, s in HEADLINE)] for name, label in labels]
    return markdown_table([f"seed {first}", *(title for _, _, title, _ in HEADLINE)], rows, padded=False)


def _ablation_label(name: str, config: dict[str, Any] | None, base: dict[str, Any] | None) -> str:
    """What the ablation is (the ``comment`` its run stored, else its name) and the settings its checkpoint changed
    against DenseCL's of the same seed."""
    if config is None or base is None:
        return name
    changed = ", ".join(
        f"{k} {v} instead of {'the default' if w is None else w}" for k, (v, w) in differences(config, base).items()
    )
    return f"{config.get('comment') or name} ({changed or '**no setting differs**'})"


def settings_lines(study: Study) -> list[str]:
    """The pre-training settings as stored in the checkpoints, and every difference between the two methods."""
    dense = next((c for n, c in study.configs.items() if re.fullmatch(r"densecl-s\d+", n)), None)
    moco = next((c for n, c in study.configs.items() if re.fullmatch(r"mocov2-s\d+", n)), None)
    if dense is None:
        return [f"{MISSING} (no checkpoint yet)"]
    keys = (
        "arch",
        "hidden_dim",
        "out_dim",
        "queue_len",
        "momentum",
        "temperature",
        "crop_size",
        "min_scale",
        "batch_size",
        "epochs",
        "lr",
        "weight_decay",
        "precision",
        "data",
    )
    lines = [
        "Pre-training, from the checkpoints' stored configs: " + ", ".join(f"{k} {dense.get(k)}" for k in keys) + "."
    ]
    if moco is not None:
        other = sorted(differences(dense, moco, "loss_lambda"))
        lines.append(
            f"DenseCL lambda {dense.get('loss_lambda')}, MoCo-v2 lambda {moco.get('loss_lambda')}; "
            + ("every other setting is the same." if not other else f"**they also differ in {', '.join(other)}**.")
        )
    return lines


def differences(a: dict[str, Any], b: dict[str, Any], *also_ignored: str) -> dict[str, tuple[Any, Any]]:
    """The settings two stored configs differ in, ``key -> (a's value, b's value)``, except run-only ones."""
    ignored = {
        "seed",
        "output_dir",
        "device",
        "workers",
        "log_every",
        "save_every",
        "dist_timeout",
        "keep_every",
        "comment",
        *also_ignored,
    }  # no effect on the result
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if k not in ignored and a.get(k) != b.get(k)}


def timing_table(timings: list[tuple[str, float]]) -> str:
    from densecl.tables import markdown_table

    if not timings:
        return f"{MISSING} (no step has finished yet)"
    totals: dict[str, float] = {}
    for name, seconds in timings:
        totals[name] = totals.get(name, 0.0) + seconds
    rows = [[name, f"{s / 60:.1f}"] for name, s in totals.items()]
    rows.append(["**total**", f"**{sum(totals.values()) / 60:.1f}**"])
    return markdown_table(["step", "wall time (min)"], rows, padded=False)


# ------------------------------------------------------------------ grouped batch norm


def group_size(study: Study) -> int | None:
    """N of the grouped runs (``densecl-bnN-s0``, ...), None when there are none."""
    sizes = {int(m.group(1)) for name in study.configs if (m := re.fullmatch(r"(?:densecl|mocov2)-bn(\d+)-s\d+", name))}
    sizes |= {
        int(m.group(1)) for name, _ in study.records if (m := re.fullmatch(r"(?:densecl|mocov2)-bn(\d+)-s\d+", name))
    }
    return min(sizes) if sizes else None


def grouped_seeds(study: Study, n: int) -> list[int]:
    """The seeds whose four runs (each method with one group and with groups of ``n``) have been evaluated."""
    names = {name for name, _ in study.records}
    return [s for s in study.seeds if {f"densecl-bn{n}-s{s}", f"mocov2-bn{n}-s{s}"} <= names]


def grouped_table(study: Study, n: int) -> str:
    """Both methods with groups of ``n``: means, DenseCL − MoCo-v2, each against its single-group self, the floor.

    Every row reads the seeds of :func:`grouped_seeds`, so that a study whose grouped runs are not all done yet
    compares like with like: the single-group rows here are those seeds' runs, not the headline's.
    """
    from densecl.tables import markdown_table

    study = dataclasses.replace(study, seeds=grouped_seeds(study, n))
    g = f"-bn{n}"
    rows = [
        [f"{label}, groups of {n}", *(method_cell(study, m + g, p, k, s) for p, k, _, s in HEADLINE)]
        for m, label in METHODS
    ]
    rows.append(
        [
            "DenseCL − MoCo-v2, groups, 95 % CI",
            *(difference_cell(study, p, k, s, "densecl" + g, "mocov2" + g) for p, k, _, s in HEADLINE),
        ]
    )
    rows.append(["verdict, groups", *(verdict(study, p, k, "densecl" + g, "mocov2" + g) for p, k, _, _ in HEADLINE)])
    rows.append(
        ["DenseCL − MoCo-v2, one group, 95 % CI", *(difference_cell(study, p, k, s) for p, k, _, s in HEADLINE)]
    )
    for m, label in METHODS:
        rows.append(
            [
                f"{label}: groups − one group, 95 % CI",
                *(difference_cell(study, p, k, s, m + g, m) for p, k, _, s in HEADLINE),
            ]
        )
    for m, label in METHODS:
        for suffix, setting in (("", "one group"), (g, "groups")):
            rows.append(
                [
                    f"{label}, {setting}: seeds above random init",
                    *(above_floor_cell(study, m + suffix, p, k) for p, k, _, _ in HEADLINE),
                ]
            )
    rows.append(["random init", *(single_cell(study, "random", p, k, s) for p, k, _, s in HEADLINE)])
    return markdown_table(["backbone", *(title for _, _, title, _ in HEADLINE)], rows, padded=False)


ACCURACY_AT = (100, 300, None)  # steps at which the training accuracies are read; None: the run's last line


def accuracy_table(study: Study, run: Path, n: int | None) -> str:
    """The pre-training top-1 accuracies of the global and dense tasks, early and at the end (mean ± std over seeds)."""
    from densecl.tables import markdown_table

    settings = [(m, f"{label}, one group") for m, label in METHODS]
    if n is not None:
        settings += [(f"{m}-bn{n}", f"{label}, groups of {n}") for m, label in METHODS]
    columns = [(key, at) for key in ("acc_global", "acc_dense") for at in ACCURACY_AT]
    rows = []
    for name, label in settings:
        seeds = [s for s in study.seeds if (run / f"{name}-s{s}" / "metrics.jsonl").exists()]
        cells = []
        for key, at in columns:
            values = [_logged(run / f"{name}-s{s}", key, at) for s in seeds]
            cells.append(_mean_std_cell(values) if values and None not in values else MISSING)  # type: ignore[arg-type]
        rows.append([f"{label} ({len(seeds)} seed{'' if len(seeds) == 1 else 's'})", *cells])
    header = [
        f"{'global' if key == 'acc_global' else 'dense'} top-1 %, {'end' if at is None else f'step {at}'}"
        for key, at in columns
    ]
    return markdown_table(["pre-training", *header], rows, padded=False)


def _logged(run: Path, key: str, at: int | None) -> float | None:
    """``key`` of the metrics line at step ``at`` (or the last one) of a run; None when it was not logged."""
    try:
        lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return None
    lines = [r for r in lines if key in r]
    if not lines:
        return None
    if at is None:
        return float(lines[-1][key])
    return next((float(r[key]) for r in lines if r["step"] == at), None)


def _mean_std_cell(values: list[float]) -> str:
    mean, sd = mean_std(values)
    return f"{mean:.1f} ± {sd:.1f}" if len(values) > 1 else f"{mean:.1f}"


# ------------------------------------------------------------------ figures


def radius_figure(study: Study, out: Path) -> Path | None:
    """Correspondence accuracy against radius at C4 and C5: DenseCL and MoCo-v2 (mean ± std over seeds), random
    init, the supervised backbones.
    """
    from densecl import plotting

    rows = []
    for stage in ("c4", "c5"):
        radii = sorted(
            {
                m.group(1)
                for (_, p), r in study.records.items()
                if p == "correspondence"
                for k in r["metrics"]
                if (m := re.fullmatch(rf"{stage}_within_([\d.]+)", k))
            },
            key=float,
        )
        if not radii:
            return None
        for m, label in METHODS:
            cols = [_per_seed(study, m, "correspondence", f"{stage}_within_{r}") for r in radii]
            if any(c is None for c in cols):
                continue
            stats = [mean_std(c) for c in cols]  # type: ignore[arg-type]
            rows.append(
                (
                    f"{label} ({len(study.seeds)} seeds)",
                    [float(r) for r in radii],
                    [s[0] for s in stats],
                    [s[1] for s in stats],
                )
            )
        for name, label in SINGLES:
            vals = [value(study, name, "correspondence", f"{stage}_within_{r}") for r in radii]
            if all(v is not None for v in vals):
                rows.append((label, [float(r) for r in radii], vals, [0.0] * len(radii)))
    if not rows or len(rows) % 2:
        return None
    return plotting.plot_accuracy_by_radius(rows, ("C4", "C5"), out)


def masks_figure(study: Study, run: Path, out: Path) -> Path | None:
    """dense-nn masks of the first test images: DenseCL and MoCo-v2 (first seed), random init, the supervised
    backbones.
    """
    import numpy as np

    from densecl import plotting

    first = study.seeds[0] if study.seeds else 0
    rows = []
    for name, label in ((f"densecl-s{first}", "DenseCL"), (f"mocov2-s{first}", "MoCo-v2"), *SINGLES):
        path = run / "eval" / f"{name}_dense-nn-masks.npz"
        if path.exists():
            with np.load(path) as masks:
                rows.append((label, dict(masks)))
    return plotting.draw_masks(rows, out) if rows else None


def shrink_copy(src: Path, dst: Path, max_side: int = FIGURE_MAX_SIDE) -> None:
    from densecl.inputs.files.photo import open_rgb

    dst.parent.mkdir(parents=True, exist_ok=True)
    image = open_rgb(src, what="figure")
    image.thumbnail((max_side, max_side))
    image.quantize(256).save(dst, optimize=True)  # a 256-colour palette: a few times smaller


# ------------------------------------------------------------------ the report


def render(study: Study, data: str, run: Path) -> str:
    machine = study.machine
    figures = "\n\n".join(f"![{caption}]({link})\n\n*{caption}.*" for link, caption in study.figures)
    seeds = ", ".join(map(str, study.seeds)) or MISSING
    return "\n".join(
        [
            "# Does DenseCL give better dense features than MoCo-v2? The study",
            "",
            "Written by `scripts/experiment.sh` (this report by `scripts/experiment_report.py`).",
            "DenseCL (lambda 0.5) and MoCo-v2 (lambda 0) are pre-trained with everything else identical, once per",
            f"pre-training seed (seeds {seeds}), on the train images of the photo scenes in `{data}`",
            "(docs/photo-scenes.md); every number is on the test split. Random init is the floor of each",
            "instrument. Two backbones are trained from random init with segmentation labels by one recipe: the",
            "supervised reference with the train split's, the fair supervised baseline, and the oracle with the",
            "train and the test split's. The oracle has seen the test objects and backgrounds: it is no",
            "competitor but the top of the label instruments' range, what they read when a backbone knows the test",
            "classes (labels teach no location: the oracle is not the top of correspondence's range).",
            "",
            "The design: the same runs with batch norm over groups of the batch and the keys shuffled across them",
            "(`--bn-group-size`), ablations of DenseCL on the first seed (each a flag whose default is the paper's),",
            "and the instruments run on every backbone alike, instrument by instrument: `correspondence` (view",
            "pairs of test images, C4 and C5), `dense-nn` (in-context nearest-neighbour segmentation from memories",
            "of C4 patches), `overcluster`, `seg-probe` and `svm`. `scripts/experiment.sh` resumes where it stopped",
            "(every step whose output exists is skipped, an unfinished pre-training resumes from its checkpoint);",
            "`DRY_RUN=1` prints the plan and `STEPS=...` runs some phases; every setting is an environment override.",
            "All pre-trainings of one study run the same code: the first records its commit in `RUN/PRETRAIN_COMMIT`",
            "and a later one with other code stops, naming the `git worktree` to use.",
            "",
            *settings_lines(study),
            "",
            f"Machine: {machine}.",
            "",
            "## Headline (test split, percent)",
            "",
            "Methods: mean ± std over pre-training seeds. DenseCL − MoCo-v2: mean paired difference (same seed:",
            "same initial weights and data order) with its 95 % t-interval; the verdict says whether the interval",
            "excludes zero and on how many seeds DenseCL scored higher.",
            "",
            headline_table(study),
            "",
            "## Dense correspondence against ground-truth geometry",
            "",
            "Two views of each test image with known crop and flip and the MoCo-v2 colour augmentation; a query",
            "cell is right when its most similar cell of the other view holds the same image point",
            "(`densecl eval correspondence`).",
            "",
            "### C5",
            "",
            correspondence_table(study, "c5"),
            "",
            "### C4",
            "",
            correspondence_table(study, "c4"),
            "",
            "## In-context dense nearest-neighbour segmentation, by memory size (mIoU)",
            "",
            memory_table(study),
            "",
            *grouped_section(study, run),
            "## Ablations of DenseCL (first seed)",
            "",
            ablation_table(study),
            "",
            "## Figures",
            "",
            figures or f"{MISSING} (no figure yet)",
            "",
            "## Wall time",
            "",
            timing_table(study.timings),
            "",
        ]
    )


def grouped_section(study: Study, run: Path) -> list[str]:
    n = group_size(study)
    lines = [
        "## Batch-norm statistics: one group against groups with shuffled keys",
        "",
    ]
    if n is None:
        return [*lines, f"{MISSING} (no grouped run yet)", ""]
    seeds = grouped_seeds(study, n)
    if not seeds:
        return [*lines, f"{MISSING} (no seed has both methods' grouped runs evaluated yet)", ""]
    on = "every seed" if seeds == study.seeds else f"seed{'' if len(seeds) == 1 else 's'} {', '.join(map(str, seeds))}"
    return [
        *lines,
        f"The same runs again with every batch norm of both encoders over groups of {n} images and the key batch",
        "shuffled across the groups (`--bn-group-size`: shuffle-BN in one process, as the authors' 8 GPUs of 32),",
        "against the runs above, where each batch norm sees the whole batch of 32 and a query and its positive key",
        "share their batch statistics. Same seeds: same initial weights and data order. Differences pair the runs",
        f"of one seed, with 95 % t-intervals. Every row of this table reads the seeds with all four runs: {on}.",
        "",
        grouped_table(study, n),
        "",
        "Training accuracy of the two (K + 1)-way tasks (K = the queue length; chance is 1 / (K + 1)), read from",
        "`metrics.jsonl`, mean ± std over seeds:",
        "",
        accuracy_table(study, run, n),
        "",
    ]


def keep_analysis(generated: str, previous: str | None) -> str:
    if previous is not None and ANALYSIS_MARKER in previous:
        return generated + previous[previous.index(ANALYSIS_MARKER) :]
    return f"{generated}{ANALYSIS_MARKER}\n\n{NO_ANALYSIS}"


def write_report(run: Path, data: str, out: Path, figures_dir: Path) -> Path:
    study = collect(run)
    with tempfile.TemporaryDirectory(prefix="densecl-report-") as tmp:  # not into RUN: it may be a record git keeps
        drawn_dir = Path(tmp)
        drawn = {
            "accuracy_radius.png": radius_figure(study, drawn_dir / "accuracy_radius.png"),
            "dense_nn_masks.png": masks_figure(study, run, drawn_dir / "dense_nn_masks.png"),
        }
        for name, caption in (
            ("accuracy_radius.png", "Correspondence accuracy against pixel radius, test pairs (bands: std over seeds)"),
            ("dense_nn_masks.png", "dense-nn masks of the first test images (all the memory; first seed)"),
            ("curves.png", "Pre-training loss, accuracies and learning rate of every DenseCL and MoCo-v2 run"),
            (
                "curves-grouped.png",
                "Pre-training curves of the first seed, one batch-norm group against groups with shuffled keys",
            ),
            (
                "matches.png",
                "Mutual matches with cosine >= 0.9 on the first of 16 test view pairs (densecl correspond): "
                "green where the views' geometry confirms the match, red where it does not, grey where view 2 does not "
                "show the point",
            ),
        ):
            src = drawn[name] if name in drawn else run / "figures" / name  # None: nothing to draw yet
            if src is not None and src.exists():
                shrink_copy(src, figures_dir / name)
                study.figures.append((os.path.relpath(figures_dir / name, out.parent), caption))
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = out.read_text() if out.exists() else None
    out.write_text(keep_analysis(render(study, data, run), previous))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, default=Path("runs/study"))
    p.add_argument("--data", default=".cache/study-scenes")
    p.add_argument("--out", type=Path, default=Path("docs/results-1050-steps.md"))
    p.add_argument("--figures", type=Path, default=Path("docs/figures"))
    args = p.parse_args()
    print(f"wrote {write_report(args.run, args.data, args.out, args.figures)}")


if __name__ == "__main__":
    main()
