"""``densecl pretrain``: recipe + flags -> resolved config -> :func:`densecl.train.pretrain`."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from densecl import checkpoint, config
from densecl.config import PretrainConfig


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pretrain",
        help="pre-train DenseCL (or MoCo-v2 with --loss-lambda 0)",
        description="Pre-train DenseCL. A recipe (--config) sets the defaults; every flag below overrides it. "
        f"Recipes: {', '.join(config.recipe_names())}. Multi-GPU / multi-node: "
        "torchrun --nproc_per_node N [--nnodes M ...] -m densecl pretrain ...",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS,  # so we know which flags were given
    )
    p.add_argument("--config", help="recipe name or YAML file (default: built-in defaults, DenseCL R50)")
    p.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        help="continue from a checkpoint (default: OUTPUT_DIR/checkpoint.pt); its config is reused, flags given here override it",
    )
    defaults = PretrainConfig()
    for f in dataclasses.fields(PretrainConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", f"default {getattr(defaults, f.name)!r}")
        p.add_argument(flag, dest=f.name, metavar=f.type.split()[0].upper(), help=help_text)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from densecl.train import pretrain

    given = vars(args)
    types = {f.name: f.type for f in dataclasses.fields(PretrainConfig)}
    overrides = {k: config.coerce(k, types[k], v, "the command line") for k, v in given.items() if k in types}

    recipe = config.load_recipe(given["config"]) if "config" in given else {}
    values = {**recipe, **overrides}
    state = None
    if "resume" in given:
        path = Path(given["resume"])
        if given["resume"] == "auto":  # the checkpoint in the output_dir this command line names
            path = Path(config.from_dict(values).output_dir) / checkpoint.CHECKPOINT_NAME
        state = checkpoint.load(path)
        values = {**state.config, **overrides}  # the run's own config; flags given here win
    pretrain(config.from_dict(values), resume=state, precision_cache=precision_cache_path())
    return 0


def precision_cache_path() -> Path | None:
    """Where ``--precision auto`` on a CPU remembers its timing: ``$DENSECL_PRECISION_CACHE`` (empty: nowhere),
    else ``$XDG_CACHE_HOME/densecl/precision.json``, else ``~/.cache/densecl/precision.json``."""
    if "DENSECL_PRECISION_CACHE" in os.environ:
        return Path(os.environ["DENSECL_PRECISION_CACHE"]) if os.environ["DENSECL_PRECISION_CACHE"] else None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "densecl" / "precision.json"
