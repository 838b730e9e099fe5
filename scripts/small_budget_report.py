"""The small-budget study's learning curves (scripts/small_budget.sh) as a table and a figure.

    python scripts/small_budget_report.py --run "photo scenes=results/small-budget" \\
        --run "4-band 16-bit scenes=results/small-budget-bands4" --out docs/results.md --figures docs/figures \\
        --budget 4500

Reads ``RUN/eval/<method>-s<seed>-at<iteration>_<protocol>.json`` (each kept checkpoint read by the curve
instruments, and at the study's budget by every instrument), ``RUN/eval/<random|reference|oracle>_<protocol>.json``
(random init, the floor; the two supervised backbones), ``RUN/timing.tsv`` (the wall time of every stretch of
pre-training) and ``RUN/MACHINE``. A method's cell is the mean over its seeds (± the standard deviation when there
are several). The budget that learns is the first iteration at which a method is above random init by both
margins (:data:`MARGINS`) on every seed it has there.

The study at the budget: every instrument on each method's seeds read by every instrument there, each method
against MoCo-v2 paired over the seeds the two share (same initial weights and data order) with a 95 % t-interval,
so a study still under way shows what its seeds say so far, and the recipe
decision: a rule becomes a recipe when its interval against MoCo-v2 excludes zero, upwards, on at least
:data:`RECIPE_WINS` of the dense instruments (:data:`DENSE`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import experiment_report as study  # noqa: E402  the statistics and cells of make experiment's report

MISSING = "—"
METHODS = {
    "densecl": "DenseCL (paper)",
    "mocov2": "MoCo-v2",
    "geometry": "geometry",
    "hybrid": "hybrid",
    "both": "both",
}
# (protocol, metric, column title, scale to percent)
CURVES = (
    ("correspondence", "c4_accuracy", "C4 correspondence", 100),
    ("correspondence", "c5_accuracy", "C5 correspondence", 100),
    ("seg-probe", "mIoU", "seg-probe mIoU", 1),
)
#: the floor must be beaten by this much (percentage points) for a budget to count as learning
MARGINS = {("correspondence", "c4_accuracy"): 10.0, ("seg-probe", "mIoU"): 2.0}
#: the dense instruments of the recipe decision, and on how many of them a rule must beat MoCo-v2
DENSE = (
    ("correspondence", "c4_accuracy"),
    ("correspondence", "c5_accuracy"),
    ("dense-nn", "mIoU"),
    ("seg-probe", "mIoU"),
)
RECIPE_WINS = 2
PAPER = ("densecl", "mocov2")  # the methods that are not rules
POINT = re.compile(r"^(?P<method>[a-z0-9]+)-s(?P<seed>\d+)-at(?P<step>\d+)_(?P<protocol>[a-z-]+)\.json$")


def read_points(run: Path) -> dict[tuple[str, str, str], dict[int, dict[int, float]]]:
    """``{(method, protocol, metric): {iteration: {seed: value in percent}}}`` from the curve files."""
    points: dict = defaultdict(lambda: defaultdict(dict))
    for path in sorted((run / "eval").glob("*-at*_*.json")):
        match = POINT.match(path.name)
        if match is None:
            continue
        metrics = json.loads(path.read_text())["metrics"]
        for protocol, metric, _, scale in CURVES:
            if protocol == match["protocol"] and metric in metrics:
                value = scale * metrics[metric]["mean"]
                points[(match["method"], protocol, metric)][int(match["step"])][int(match["seed"])] = value
    return points


def read_floor(run: Path) -> dict[tuple[str, str], float]:
    floor = {}
    for protocol, metric, _, scale in CURVES:
        path = run / "eval" / f"random_{protocol}.json"
        if path.exists():
            floor[(protocol, metric)] = scale * json.loads(path.read_text())["metrics"][metric]["mean"]
    return floor


def read_wall_time(run: Path, per: str = "method") -> dict[str, float]:
    """Seconds of pre-training per method (all seeds' runs), or per run (``per="run"``: ``<method>-s<seed>``), from
    ``timing.tsv``. A run whose directory was lost (a new machine) started again from iteration 0: only the
    stretches since its last start count. A pre-training line says the iteration its checkpoint reached (its
    fourth column; in older records, the curve point read right after it)."""
    timing = run / "timing.tsv"
    lines = [line.split("\t") for line in timing.read_text().splitlines()] if timing.exists() else []
    seconds: dict[str, float] = {}
    reached: dict[str, int] = {}
    for i, (name, wall, *rest) in enumerate(lines):
        if not (match := re.match(r"^pretrain-([a-z0-9]+-s\d+)$", name)):
            continue
        key = match[1]
        at = int(rest[1]) if len(rest) > 1 and rest[1].isdigit() else _point_read_next(lines[i + 1 :], key)
        if at is not None:
            if at <= reached.get(key, -1):
                seconds[key] = 0.0  # started again
            reached[key] = at
        seconds[key] = seconds.get(key, 0.0) + float(wall)
    if per == "run":
        return seconds
    methods: dict[str, float] = defaultdict(float)
    for key, value in seconds.items():
        methods[key.rsplit("-s", 1)[0]] += value
    return methods


def _point_read_next(lines: list[list[str]], key: str) -> int | None:
    """The iteration of the curve point of run ``key`` read next, if that comes before its next pre-training."""
    for name, *_ in lines:
        if name == f"pretrain-{key}":
            return None
        if match := re.match(rf"^[a-z-]+-{re.escape(key)}-at(\d+)$", name):
            return int(match[1])
    return None


def cell(values: dict[int, float]) -> str:
    if not values:
        return MISSING
    xs = list(values.values())
    mean = statistics.fmean(xs)
    return f"{mean:.2f}" if len(xs) == 1 else f"{mean:.2f} ± {statistics.stdev(xs):.2f} ({len(xs)})"


def learning_budget(points, floor, method: str) -> int | None:
    """The first iteration at which every seed of ``method`` clears every margin over the floor."""
    steps = sorted(set.intersection(*(set(points.get((method, *key), {})) for key in MARGINS)) if MARGINS else set())
    for step in steps:
        if all(
            key in floor and all(v >= floor[key] + margin for v in points[(method, *key)][step].values())
            for key, margin in MARGINS.items()
        ):
            return step
    return None


def read_study(run: Path, budget: int) -> study.Study:
    """The records at ``budget`` as a :class:`experiment_report.Study`: ``<method>-s<seed>`` for each run's
    checkpoint there, ``random``, ``reference``, ``oracle``. Which seeds a table reads is chosen per row
    (:func:`on_seeds`)."""
    found = study.Study()
    for path in sorted((run / "eval").glob("*.json")):
        match = POINT.match(path.name)
        if match is not None and int(match["step"]) == budget:
            name, protocol = f"{match['method']}-s{match['seed']}", match["protocol"]
        elif (single := re.match(r"^(random|reference|oracle)_([a-z-]+)\.json$", path.name)) is not None:
            name, protocol = single[1], single[2]
        else:
            continue
        found.records[(name, protocol)] = json.loads(path.read_text())
    return found


def complete_seeds(found: study.Study) -> dict[str, list[int]]:
    """Each method's seeds whose checkpoint every instrument has read."""
    protocols = {p for p, *_ in study.HEADLINE}
    complete: dict[str, set[int]] = defaultdict(set)
    for name in {n for n, _ in found.records}:
        if (m := re.fullmatch(r"([a-z0-9]+)-s(\d+)", name)) and all((name, p) in found.records for p in protocols):
            complete[m[1]].add(int(m[2]))
    return {m: sorted(seeds) for m, seeds in complete.items()}


def on_seeds(found: study.Study, *methods: str) -> study.Study:
    """``found`` read on the seeds that every one of ``methods`` has complete: a paired comparison needs the same
    seeds on both sides, and a method's row needs every instrument on each of its seeds."""
    complete = complete_seeds(found)
    shared = set.intersection(*(set(complete.get(m, ())) for m in methods))
    return dataclasses.replace(found, seeds=sorted(shared))


def study_methods(found: study.Study) -> list[str]:
    complete = complete_seeds(found)
    return [m for m in METHODS if complete.get(m)]


def recipe_wins(found: study.Study, method: str) -> list[str] | None:
    """The dense instruments on which ``method`` beats MoCo-v2 with a 95 % interval above zero, over the seeds
    the two share; None while they share fewer than two (no interval yet)."""
    paired = on_seeds(found, method, "mocov2")
    if len(paired.seeds) < 2:
        return None
    wins = []
    for protocol, metric in DENSE:
        a = study._per_seed(paired, method, protocol, metric)
        b = study._per_seed(paired, "mocov2", protocol, metric)
        if a is None or b is None:
            continue
        mean, half = study.paired_interval(a, b)
        if half is not None and mean - half > 0:
            wins.append(f"{protocol} {metric}")
    return wins


def _n_seeds(n: int) -> str:
    return f"{n} seed" + ("s" if n != 1 else "")


def study_section(run: Path, budget: int, level: int = 2) -> list[str]:
    from densecl.tables import markdown_table

    found = read_study(run, budget)
    methods = study_methods(found)
    out = [f"{'#' * level} The study at {budget} iterations", ""]
    if not methods:
        return out + [f"{MISSING} (no run has been read by every instrument at {budget} yet)", ""]
    out += [
        f"Every instrument on each run's checkpoint at iteration {budget}, random init, and the two supervised "
        "backbones. Method rows: mean ± std over the method's seeds (how many in brackets); method − MoCo-v2: "
        "paired over the seeds the two share (same initial weights and data order), mean and 95 % t-interval.",
        "",
    ]
    headline = study.HEADLINE
    rows = []
    for m in methods:
        own = on_seeds(found, m)
        rows.append(
            [
                f"{METHODS[m]} ({_n_seeds(len(own.seeds))})",
                *(study.method_cell(own, m, p, k, s) for p, k, _, s in headline),
            ]
        )
    for m in methods:
        if m != "mocov2" and "mocov2" in methods:
            paired = on_seeds(found, m, "mocov2")
            rows.append(
                [
                    f"{METHODS[m]} − MoCo-v2 ({_n_seeds(len(paired.seeds))})",
                    *(study.difference_cell(paired, p, k, s, m, "mocov2") for p, k, _, s in headline),
                ]
            )
    rows += [
        [label, *(study.single_cell(found, name, p, k, s) for p, k, _, s in headline)] for name, label in study.SINGLES
    ]
    out += [markdown_table(["backbone", *(title for _, _, title, _ in headline)], rows, padded=False), ""]
    runs, complete = read_wall_time(run, per="run"), complete_seeds(found)
    seeds = sorted({s for m in methods for s in complete[m]})
    out += [
        "Pre-training wall time of each run, its stretches since it last started from iteration 0 (the curve runs "
        f"of the first seed go on past {budget}; the other seeds stop there), in hours on the machines of the record:",
        "",
        markdown_table(
            ["method", *(f"seed {s}" for s in seeds)],
            [
                [
                    METHODS[m],
                    *(
                        f"{runs[f'{m}-s{s}'] / 3600:.2f}" if s in complete[m] and f"{m}-s{s}" in runs else MISSING
                        for s in seeds
                    ),
                ]
                for m in methods
            ],
            padded=False,
        ),
        "",
    ]
    if "mocov2" not in methods:
        return out + ["Recipe: not decided (MoCo-v2 has not been read by every instrument yet).", ""]
    winners = {m: recipe_wins(found, m) for m in methods if m not in PAPER}
    lines = [
        f"- {METHODS[m]}: "
        + ("not compared yet (fewer than two seeds shared with MoCo-v2)" if w is None else ", ".join(w) or "none")
        for m, w in winners.items()
    ]
    chosen = [m for m, w in winners.items() if w is not None and len(w) >= RECIPE_WINS]
    if chosen:
        verdict = f"Recipe: {', '.join(METHODS[m] for m in chosen)}."
    elif any(w is None for w in winners.values()):
        verdict = "Recipe: not decided (a rule has fewer than two seeds shared with MoCo-v2)."
    else:
        verdict = f"Recipe: none; no rule beats MoCo-v2 on {RECIPE_WINS} dense instruments at {budget} iterations."
    out += [
        f"Dense instruments on which a rule beats MoCo-v2 with a 95 % interval above zero ({RECIPE_WINS} make a "
        "recipe):",
        "",
        *lines,
        "",
        verdict,
        "",
    ]
    return out


TITLE = "# Results: how long to pre-train on a small data set, and which dense positives"
INTRO = (
    "Written by `make experiment` (`scripts/small_budget.sh` on each data set; this report by "
    "`scripts/small_budget_report.py` from the records in `results/`). Each curve point is a checkpoint of a run "
    "read on the held-out split; the runs follow one long cosine schedule, so a point is the run's state at that "
    "iteration, not the end of a shorter run (which would have annealed its learning rate by then). Random init is "
    "the floor; a budget learns when C4 correspondence is at least "
    f"{MARGINS[('correspondence', 'c4_accuracy')]:g} points and the seg-probe "
    f"{MARGINS[('seg-probe', 'mIoU')]:g} mIoU above it on every seed."
)


def report(run: Path, figures: Path | None, out_path: Path, budget: int | None = None, level: int = 2) -> str:
    """One data set's section: the curves, the budget that learns, the study at ``budget``; headings at ``level``."""
    h = "#" * level
    points, floor, wall = read_points(run), read_floor(run), read_wall_time(run)
    methods = [m for m in METHODS if any(key[0] == m for key in points)]
    steps = sorted({step for series in points.values() for step in series})
    machine = study.recorded_machine(run) or "not recorded"
    out = [f"Record: `{run}`. Machine: {machine}.", ""]
    for protocol, metric, title, _ in CURVES:
        out += [f"{h} {title}", ""]
        base = floor.get((protocol, metric))
        out += [f"Random init: {MISSING if base is None else f'{base:.2f}'}.", ""]
        header = ["iteration", *(METHODS[m] for m in methods)]
        out += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        for step in steps:
            row = [str(step), *(cell(points.get((m, protocol, metric), {}).get(step, {})) for m in methods)]
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    out += [f"{h} The budget that learns", "", "| method | first iteration above the floor by both margins | "
            "pre-training wall time so far |", "| --- | --- | --- |"]  # fmt: skip
    for m in methods:
        learns = learning_budget(points, floor, m)
        hours = f"{wall[m] / 3600:.1f} h" if m in wall else MISSING
        out.append(f"| {METHODS[m]} | {MISSING if learns is None else learns} | {hours} |")
    out.append("")
    if figures is not None and steps:
        figure = draw(points, floor, methods, figures / f"{run.name}-curves.png")
        out += [f"![learning curves]({os.path.relpath(figure, out_path.parent)})", ""]
    if budget is not None:
        out += study_section(run, budget, level)
    return "\n".join(out)


def document(runs: list[tuple[str, Path]], figures: Path | None, out_path: Path, budget: int | None) -> str:
    """The whole report: a section per data set (``(title, record)``), the hand-written analysis kept."""
    out = [TITLE, "", INTRO, ""]
    for title, run in runs:
        out += [f"## {title}", "", report(run, figures, out_path, budget, level=3), ""]
    previous = out_path.read_text() if out_path.exists() else None
    return study.keep_analysis("\n".join(out), previous)


def draw(points, floor, methods, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVES), figsize=(5 * len(CURVES), 3.6))
    for ax, (protocol, metric, title, _) in zip(axes, CURVES):
        for m in methods:
            series = points.get((m, protocol, metric), {})
            xs = sorted(series)
            means = [statistics.fmean(series[x].values()) for x in xs]
            line = ax.plot(xs, means, marker="o", label=METHODS[m])[0]
            low = [min(series[x].values()) for x in xs]
            high = [max(series[x].values()) for x in xs]
            ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.15)  # the seeds' range
        if (protocol, metric) in floor:
            ax.axhline(floor[(protocol, metric)], color="grey", linestyle="--", label="random init")
        if (protocol, metric) in MARGINS and (protocol, metric) in floor:
            target = floor[(protocol, metric)] + MARGINS[(protocol, metric)]
            ax.axhline(target, color="grey", linestyle=":", label="floor + margin")
        ax.set_title(title)
        ax.set_xlabel("iteration")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--run",
        action="append",
        required=True,
        metavar="TITLE=RECORD",
        help="a data set's section title and its study's RUN folder or record; repeat for each data set",
    )
    p.add_argument("--out", type=Path, required=True, help="the markdown report to write")
    p.add_argument("--figures", type=Path, default=None, help="folder for the curves figures (none: no figures)")
    p.add_argument("--budget", type=int, default=None, help="the iteration the study is read at (none: no study)")
    args = p.parse_args()
    runs = []
    for given in args.run:
        title, sep, folder = given.rpartition("=")
        if not sep or not Path(folder).is_dir():
            p.error(f"--run {given}: give TITLE=FOLDER with an existing folder")
        runs.append((title, Path(folder)))
    text = document(runs, args.figures, args.out, args.budget)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(args.out)
    print(f"small-budget report: {args.out}")


if __name__ == "__main__":
    main()
