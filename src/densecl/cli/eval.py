"""``densecl eval <protocol>``: transfer evaluation of pre-trained backbone weights.

Every protocol takes ``--weights`` (a checkpoint in any layout
:mod:`densecl.weights` reads, or ``random``) and ``--arch``, writes one JSON
result (metrics, config, weights sha256, seeds, data split, wall time) to
``--out`` (default ``<run dir>/eval/<protocol>_<data dir name>.json``, the
run dir being the weights file's folder, or ``runs/random-<arch>``), and
prints a table. ``--seeds N`` repeats with seeds ``seed .. seed+N-1`` and
reports mean and standard deviation. ``densecl eval summary A.json B.json``
prints one row per weights.

Fine-tuning protocols (``seg-finetune``, ``det``) run under torchrun::

    torchrun --nproc_per_node 8 -m densecl eval det --weights ckpt.pt --data coco ...
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

from densecl.config import RANDOM_WEIGHTS
from densecl.errors import InputError
from densecl.evaluation import registry


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help=f"evaluate backbone weights: {', '.join(registry.PROTOCOLS)}; summary",
        description=__doc__.split("\n\n")[1],
    )
    protocols = parser.add_subparsers(dest="protocol", required=True, metavar="PROTOCOL", action=_LazyProtocols)
    for name, entry in registry.PROTOCOLS.items():  # empty until chosen: see _LazyProtocols
        protocols.add_parser(name, help=entry.help, formatter_class=HelpWithDefaults)
    s = protocols.add_parser("summary", help="print one row per weights from result JSON files")
    s.add_argument("results", nargs="+", type=Path, help="result files written by densecl eval")
    s.set_defaults(func=run_summary)


class HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's help ends with its default, except a None default: that option's help says what fills it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


class _LazyProtocols(argparse._SubParsersAction):
    """Protocol subcommands whose options are added when argparse picks one.

    A protocol's options come from its config dataclass, so building them
    imports its module (torch, torchvision's detection models, scikit-learn).
    Each protocol is registered with an empty parser (name and one-line help
    from the registry, all ``densecl eval --help`` needs); the chosen one is
    filled in just before argparse hands it the rest of the command line, so
    ``densecl eval svm ...`` imports the svm module and no other protocol's.
    """

    def __call__(self, parser, namespace, values, option_string=None):
        name = values[0]
        chosen = self.choices.get(name)
        if name in registry.PROTOCOLS and chosen is not None and chosen.get_default("func") is None:
            add_protocol_options(chosen, registry.load(name))
        super().__call__(parser, namespace, values, option_string)


def protocol_parser(name: str) -> argparse.ArgumentParser:
    """The parser of ``densecl eval NAME`` on its own (imports that protocol's module)."""
    parser = argparse.ArgumentParser(prog=f"densecl eval {name}", formatter_class=HelpWithDefaults)
    add_protocol_options(parser, registry.load(name))
    return parser


def add_protocol_options(p: argparse.ArgumentParser, protocol: registry.Protocol) -> None:
    """The options every protocol takes, then one per config field; ``func`` runs the protocol."""
    p.description = (protocol.description or registry.PROTOCOLS[protocol.name].help).split("\n\n")[0]
    _common_options(p)
    _config_options(p, protocol.config)
    p.set_defaults(func=run)


def add_input_options(p: argparse.ArgumentParser) -> None:
    """What the weights take, where they do not say (``--weights random``, weights of other tools): five flags."""
    p.add_argument(
        "--in-channels", type=int, default=None, help="input channels of --weights random (default: as --bands/--mean)"
    )
    p.add_argument(
        "--bands", default=None, help="the files' bands the weights take, counted from 1 (default: the weights')"
    )
    p.add_argument(
        "--mean",
        default=None,
        help="per-channel mean of the input, comma-separated (default: stored with the weights; ImageNet's for "
        "RGB weights on photos)",
    )
    p.add_argument("--std", default=None, help="per-channel std, as --mean")
    p.add_argument("--nodata", type=float, default=None, help="a stored value marking pixels without data")


def input_options_of(args: argparse.Namespace):
    """The :class:`~densecl.evaluation.backbone.InputOptions` the flags of :func:`add_input_options` give."""
    from densecl.evaluation.backbone import InputOptions

    return InputOptions(args.in_channels, args.bands, args.mean, args.std, args.nodata)


def _common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help=f"checkpoint file (any supported layout) or '{RANDOM_WEIGHTS}'")
    p.add_argument(
        "--arch", default=None, help="backbone name; required with --weights random, else read from the file"
    )
    p.add_argument(
        "--out", type=Path, default=None, help="result JSON (default: <run dir>/eval/<protocol>_<data>.json)"
    )
    add_input_options(p)
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds (seed, seed+1, ...); mean and std reported")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="when --out (or the fine-tuning checkpoints) exist, rename them NAME.old-N first; "
        "without it such a run stops",
    )


def _config_options(p: argparse.ArgumentParser, config_cls: type) -> None:
    """One flag per config field, ``--name-with-dashes``; default, help and choices from the field (see
    evaluation.options).
    """
    for field in dataclasses.fields(config_cls):
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata.get("help", "")
        default = field.metadata.get("cli_default", field.default)
        if default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        if default is dataclasses.MISSING:
            p.add_argument(flag, required=True, help=help_text)
        elif field.metadata.get("choices"):
            p.add_argument(flag, choices=field.metadata["choices"], default=default, help=help_text)
        elif field.type == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif field.type.startswith("tuple"):
            p.add_argument(flag, type=_number_tuple, default=default, help=help_text + " (comma-separated)")
        else:
            p.add_argument(flag, type=_scalar_type(field.type), default=default, help=help_text)


def _scalar_type(annotation: str):
    if annotation.startswith("int"):
        return int
    if annotation.startswith("float"):
        return float
    return str


def _number_tuple(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) if any(c in v for c in ".e") else int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def default_out(weights: str, arch: str | None, protocol: str, data: str) -> Path:
    """``<run dir>/eval/<protocol>_<data folder>.json``; several roots join: ``det_VOC2007+VOC2012.json``."""
    run_dir = (
        Path("runs") / f"{RANDOM_WEIGHTS}-{str(arch).replace('/', '-')}"  # timm/<name>: one folder
        if weights == RANDOM_WEIGHTS
        else Path(weights).parent
    )
    names = "+".join(Path(root.strip()).resolve().name for root in data.split(",") if root.strip())
    return run_dir / "eval" / f"{protocol}_{names}.json"


def checkpoint_dir_for(out: Path) -> Path:
    """Where a fine-tuning protocol keeps its checkpoints by default: ``eval/det_coco.json`` ->
    ``eval/det_coco-checkpoints/``.
    """
    return out.with_name(f"{out.stem}-checkpoints")


def detector_file_for(out: Path) -> Path:
    """Where ``det`` writes its fine-tuned detector by default: ``eval/det_coco.json`` -> ``det_coco.detector.pt``."""
    return out.with_name(f"{out.stem}.detector.pt")


def _claim_outputs(out: Path, checkpoint_dir: str, resume: bool, overwrite: bool, dist, also: str = "") -> None:
    """Stops before any work when the result or a fine-tuning run is already there; ``--overwrite`` moves them aside.

    ``also``: one more file the run writes (``det``'s detector), moved aside with the others; without
    ``--overwrite`` the protocol's ``load_data`` refuses it. Every rank decides from the same files; rank 0
    alone moves them.
    """
    from densecl import distributed, run_dir
    from densecl.evaluation.finetune import checkpoint_step, found_checkpoints

    if resume and overwrite:
        raise InputError("--resume and --overwrite contradict each other: give one")
    if not overwrite:
        if Path(out).exists():
            done = " (the evaluation it resumes is done)" if resume else ""
            run_dir.refuse_existing(out, f"the result{done}")
        found = found_checkpoints(checkpoint_dir)
        if found:
            run_dir.start_mode(found[0], checkpoint_step(found[0]), resume, overwrite, "--out")
    elif dist.is_main:
        for path in (Path(out), Path(checkpoint_dir) if checkpoint_dir else None, Path(also) if also else None):
            moved = path and run_dir.move_aside(path)
            if moved:
                print(f"densecl eval: moved {path} to {moved}")
    distributed.barrier()


def run(args: argparse.Namespace) -> int:
    import torch

    from densecl import distributed
    from densecl.devices import device_type, resolve_device
    from densecl.evaluation import results
    from densecl.evaluation.backbone import load_weights

    protocol = registry.load(args.protocol)
    if args.seeds < 1:
        raise InputError(f"--seeds must be >= 1, got {args.seeds}")
    seeds = list(range(args.seed, args.seed + args.seeds))

    if protocol.torchrun:
        dist = distributed.setup(device_type(args.device), args.dist_timeout)
    elif _torchrun_world() > 1:
        raise InputError(f"{args.protocol} runs in one process; start it without torchrun")
    else:
        dist = distributed.DistInfo(0, 1, 0)
    try:
        out = args.out or default_out(args.weights, args.arch, args.protocol, args.data)
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(protocol.config)}
        values["device"] = str(resolve_device(args.device, dist.local_rank))
        if "checkpoint_dir" in values and not values["checkpoint_dir"]:
            values["checkpoint_dir"] = str(checkpoint_dir_for(out))
        if "save_detector" in values and not values["save_detector"]:
            values["save_detector"] = str(detector_file_for(out))
        config = protocol.config(**values)
        _claim_outputs(
            out,
            getattr(config, "checkpoint_dir", ""),
            getattr(config, "resume", False),
            args.overwrite,
            dist,
            also=getattr(config, "save_detector", ""),
        )
        start = time.perf_counter()
        data = protocol.load_data(config)  # bad data fails here, before any model is built
        torch.manual_seed(args.seed)  # --weights random: the same initialisation for a seed
        options = input_options_of(args)
        backbone, weights_info = load_weights(args.weights, args.arch, options)
        evaluation = protocol.evaluate(backbone, data, config, seeds)
        wall = time.perf_counter() - start
        if dist.is_main:
            record = results.build_record(
                args.protocol, evaluation, dataclasses.asdict(config), weights_info, seeds, wall
            )
            results.write_record(out, record)
            print(results.protocol_table(record))
            print(f"wrote {out} ({wall:.1f} s)")
    finally:
        if protocol.torchrun:
            distributed.teardown()
    return 0


def run_summary(args: argparse.Namespace) -> int:
    from densecl.evaluation import results

    records = [results.read_record(path) for path in args.results]
    print(results.summary_table(records))
    return 0


def _torchrun_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))
