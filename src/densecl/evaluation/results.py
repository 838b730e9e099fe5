"""What a result file holds, how seeds are summarised, and how results print as tables.

One JSON file per protocol run::

    {"protocol": "svm", "headline": ["mAP"],
     "metrics": {"mAP": {"mean": 81.2, "std": 0.3, "per_seed": [81.0, 81.4]}, ...},
     "details": [{...per-seed extras: per-class AP, chosen costs...}],
     "config": {...}, "weights": {"source", "sha256", "arch", "format"},
     "seeds": [0, 1], "data": {"root", "train_split", "val_split", "n_train", "n_val", ...},
     "wall_time_s": 12.3, "resumed_from": {"0": 4000}, "versions": {...}}

A protocol that follows a published recipe (``det``) also writes ``"recipe"``:
its name and what was given instead of its values.

``resumed_from`` maps each fine-tuning seed that continued from a checkpoint
to the step it continued at (empty when every seed ran in one go).

``std`` is the sample standard deviation over seeds (0 for one seed).
"""

from __future__ import annotations

import json
import math
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from densecl.config import RANDOM_WEIGHTS
from densecl.tables import markdown_table


@dataclass
class Evaluation:
    """What a protocol returns: headline metrics per seed, extras, and the data it used."""

    headline: list[str]  # the metric names a summary table shows
    per_seed: list[dict[str, float | None]]  # one dict of metrics per seed
    details: list[dict[str, Any]] = field(default_factory=list)  # per seed: per-class scores etc.
    data: dict[str, Any] = field(default_factory=dict)
    resumed_from: dict[int, int] = field(default_factory=dict)  # seed -> the step a fine-tuning resumed at
    recipe: dict[str, Any] = field(default_factory=dict)  # the published recipe followed, if any


def warn(message: str) -> None:
    print(f"densecl eval: warning: {message}", file=sys.stderr)


def warn_absent_classes(classes: tuple[str, ...] | list[str], present: list[bool], split: str) -> None:
    """Says which classes have no labelled pixel in ``split`` (mIoU leaves them out)."""
    absent = [c for c, p in zip(classes, present) if not p]
    if absent:
        warn(
            f"class(es) {', '.join(absent)} have no pixel in the {split} split; "
            f"mIoU averages the {len(classes) - len(absent)} present classes"
        )


def summarise(per_seed: list[dict[str, float | None]]) -> dict[str, dict[str, Any]]:
    """``[{m: v}, ...]`` -> ``{m: {"mean", "std", "per_seed"}}`` (None values are skipped)."""
    names = list(dict.fromkeys(k for row in per_seed for k in row))
    out = {}
    for name in names:
        values = [row.get(name) for row in per_seed]
        known = np.array([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
        out[name] = {
            "mean": float(known.mean()) if known.size else None,
            "std": float(known.std(ddof=1)) if known.size > 1 else 0.0,
            "per_seed": values,
        }
    return out


def build_record(
    protocol: str,
    evaluation: Evaluation,
    config: dict[str, Any],
    weights: dict[str, Any],
    seeds: list[int],
    wall_time_s: float,
) -> dict[str, Any]:
    import torch
    import torchvision

    import densecl

    record = {
        "protocol": protocol,
        "headline": evaluation.headline,
        "metrics": summarise(evaluation.per_seed),
        "details": evaluation.details,
        "config": config,
        "weights": weights,
        "seeds": seeds,
        "data": evaluation.data,
        "wall_time_s": round(wall_time_s, 3),
        "resumed_from": {str(seed): step for seed, step in evaluation.resumed_from.items()},  # empty: one go
        "versions": {
            "densecl": densecl.__version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "python": platform.python_version(),
        },
    }
    if evaluation.recipe:
        record["recipe"] = evaluation.recipe
    return record


def write_record(path: Path, record: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(record), indent=2) + "\n")


def read_record(path: Path) -> dict[str, Any]:
    from densecl.errors import InputError

    try:
        record = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read result {path} ({e})") from None
    if not isinstance(record, dict) or "protocol" not in record or "metrics" not in record:
        raise InputError(f"{path} is not a densecl eval result (no 'protocol' / 'metrics')")
    return record


def _jsonable(x: Any) -> Any:
    """Paths -> str, tuples -> lists, NaN -> None (JSON has no NaN)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    return x


def format_value(metric: dict[str, Any]) -> str:
    """``{"mean", "std", "per_seed"}`` -> ``"81.20"`` or ``"81.20 ± 0.30"`` (several seeds)."""
    if metric.get("mean") is None:
        return "-"
    if len(metric.get("per_seed", [])) > 1:
        return f"{metric['mean']:.2f} ± {metric['std']:.2f}"
    return f"{metric['mean']:.2f}"


def weights_label(record: dict[str, Any]) -> str:
    w = record.get("weights", {})
    if w.get("source") == RANDOM_WEIGHTS:
        return f"{RANDOM_WEIGHTS} ({w.get('arch')})"
    return f"{w.get('source')} ({w.get('arch')})"


def protocol_table(record: dict[str, Any]) -> str:
    """One protocol run: every metric, one column per seed when there are several."""
    seeds = record.get("seeds", [])
    header = ["metric", *(f"seed {s}" for s in seeds)] if len(seeds) > 1 else ["metric"]
    header.append("mean ± std" if len(seeds) > 1 else "value")
    rows = []
    for name, m in record["metrics"].items():
        per_seed = [("-" if v is None else f"{v:.2f}") for v in m["per_seed"]] if len(seeds) > 1 else []
        rows.append([name, *per_seed, format_value(m)])
    title = f"{record['protocol']}: {weights_label(record)} on {record.get('data', {}).get('root', '?')}"
    return title + "\n" + markdown_table(header, rows)


def summary_table(records: list[dict[str, Any]]) -> str:
    """One row per weights, one column per protocol headline metric."""
    rows: dict[str, dict[str, str]] = {}
    columns: list[str] = []
    for record in records:
        for name in record.get("headline", []):
            column = f"{record['protocol']} {name}"
            if column not in columns:
                columns.append(column)
            rows.setdefault(weights_label(record), {})[column] = format_value(record["metrics"].get(name, {}))
    return markdown_table(
        ["weights", *columns], [[label, *(r.get(c, "-") for c in columns)] for label, r in rows.items()]
    )
