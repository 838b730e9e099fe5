"""The ``densecl`` command line: one module per subcommand.

Each module in :data:`COMMANDS` defines ``register(subparsers)``, which adds
its parser and sets ``func`` to a ``run(args) -> int``. Only this package reads
argv and the environment; nothing imports it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from densecl.errors import InputError, NonFiniteLossError, StorageError, one_line

COMMANDS = ("pretrain", "eval", "embed", "data", "export", "correspond", "plot", "checkpoint")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """All subcommands, or with ``only`` just that one (the others' modules, torch among their imports, are not
    loaded).
    """
    parser = argparse.ArgumentParser(
        prog="densecl",
        description="DenseCL / MoCo-v2 self-supervised pre-training, evaluation and export.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS if only not in COMMANDS else (only,):
        importlib.import_module(f"densecl.cli.{name}").register(subparsers)  # a missing module is a packaging bug: fail
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else None
    args = build_parser(only=command).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as e:
        print(f"densecl {args.command}: error: {one_line(e)}", file=sys.stderr)  # a data worker's too
        return 2
    except (NonFiniteLossError, StorageError) as e:
        print(f"densecl {args.command}: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `densecl ... | head`: the reader left, nothing to report
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"densecl {args.command}: interrupted; the last checkpoint is intact", file=sys.stderr)
        return 130
