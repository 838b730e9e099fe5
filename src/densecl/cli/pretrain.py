"""``densecl pretrain``: recipe + flags -> resolved config -> :func:`densecl.train.pretrain`.

What happens to the output folder (see :mod:`densecl.run_dir`):

    densecl pretrain --config demo_cpu                 # new run; stops if runs/demo holds a checkpoint
    densecl pretrain --config demo_cpu --resume        # = --resume auto: continue it if there is one, else start
    densecl pretrain --config demo_cpu --overwrite     # move runs/demo to runs/demo.old-N, then start
    densecl pretrain --resume runs/a/checkpoint.pt     # continue that file (its config, flags given here win)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from densecl import checkpoint, config, run_dir
from densecl.config import PretrainConfig
from densecl.errors import InputError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pretrain",
        help="pre-train DenseCL (or MoCo-v2 with --loss-lambda 0)",
        description="Pre-train DenseCL. A recipe (--config) sets the defaults; every flag below overrides it. "
        f"Recipes: {', '.join(config.recipe_names())}. Multi-GPU / multi-node: "
        "torchrun --nproc_per_node N [--nnodes M ...] -m densecl pretrain ...",
        argument_default=argparse.SUPPRESS,  # so we know which flags were given
    )
    p.add_argument("--config", help="recipe name or YAML file (default: built-in defaults, DenseCL R50)")
    p.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        metavar="PATH|auto",
        help="continue from a checkpoint; its config is reused, flags given here override it. Bare or 'auto': "
        "OUTPUT_DIR/checkpoint.pt if it exists, else a new run (the same command serves every restart)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run even if OUTPUT_DIR holds one: the old folder is renamed OUTPUT_DIR.old-N, never deleted",
    )
    for f in dataclasses.fields(PretrainConfig):
        flag = "--" + f.name.replace("_", "-")
        p.add_argument(flag, dest=f.name, metavar=_metavar(f), help=_help(f))
    p.set_defaults(func=run)


def _metavar(f: dataclasses.Field) -> str:
    if f.metadata.get("choices"):
        return "{" + ",".join(f.metadata["choices"]) + "}"
    return "INT|auto" if f.type.startswith("int | str") else f.type.split()[0].upper()


def _help(f: dataclasses.Field) -> str:
    """The field's sentence and its default as a recipe would write it."""
    default = f.default
    if default is None or isinstance(default, bool):
        default = str(default).lower()
    return (
        f"{f.metadata['help']} (default: {default!r})"
        if default == ""
        else f"{f.metadata['help']} (default: {default})"
    )


def run(args: argparse.Namespace) -> int:
    from densecl.train import pretrain

    given = vars(args)
    types = {f.name: f.type for f in dataclasses.fields(PretrainConfig)}
    overrides = {k: config.coerce(k, types[k], v, "the command line") for k, v in given.items() if k in types}
    overwrite = bool(given.get("overwrite"))
    resume = given.get("resume")

    recipe = config.load_recipe(given["config"]) if "config" in given else {}
    values = {**recipe, **overrides}
    state = None
    if resume is not None and resume != "auto":  # an explicit file: continue it, whatever the flags say
        if overwrite:
            raise InputError("--resume and --overwrite contradict each other: give one")
        if "config" in given:  # its recipe would be dropped for the checkpoint's own config: say so, never silently
            raise InputError(
                f"--resume {resume} continues that run with the config stored in it; --config {given['config']} "
                "would be ignored: drop --config (flags given with --resume still override the stored config), or "
                "--resume auto with --config to continue the run of the recipe's output folder"
            )
        state = checkpoint.load(resume)
    else:  # the checkpoint in the output_dir this command line names, if any, decides
        path = Path(config.from_dict(values).output_dir) / checkpoint.CHECKPOINT_NAME
        found = checkpoint.load(path) if path.exists() and not overwrite else None
        mode = run_dir.start_mode(path, found and found.step, resume == "auto", overwrite, "--output-dir")
        state = found if mode is run_dir.Start.RESUME else None
    if state is not None:
        values = {**state.config, **overrides}  # the run's own config; flags given here win
    cfg = config.from_dict(values)
    if state is not None and resume != "auto":  # resuming a file elsewhere must not land on another run
        target = Path(cfg.output_dir) / checkpoint.CHECKPOINT_NAME
        if target.exists() and not target.samefile(resume):
            raise InputError(
                f"{target} holds another run; resuming {resume} would replace it: give another --output-dir"
            )
    pretrain(cfg, resume=state, overwrite=overwrite, precision_cache=precision_cache_path())
    return 0


def precision_cache_path() -> Path | None:
    """Where ``--precision auto`` on a CPU remembers its timing: ``$DENSECL_PRECISION_CACHE`` (empty: nowhere),
    else ``$XDG_CACHE_HOME/densecl/precision.json``, else ``~/.cache/densecl/precision.json``."""
    if "DENSECL_PRECISION_CACHE" in os.environ:
        return Path(os.environ["DENSECL_PRECISION_CACHE"]) if os.environ["DENSECL_PRECISION_CACHE"] else None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "densecl" / "precision.json"
