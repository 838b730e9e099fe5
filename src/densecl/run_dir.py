"""What a new command may do with a folder or file an earlier run left: never reuse it silently.

Three ways a command meets an earlier run's output, one owner for each:

- :func:`start_mode`: a new run into a folder that holds a checkpoint stops
  with one line naming it; ``--resume`` continues it (``auto``: when there is
  one, else a fresh start, so one command line serves the first start and
  every restart), ``--overwrite`` moves it aside.
- :func:`move_aside`: ``runs/a`` -> ``runs/a.old-1``, ``r.json`` ->
  ``r.old-1.json``; nothing is ever deleted.
- :func:`refuse_existing`: a result file that exists is never replaced.
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path

from densecl.errors import InputError


class Start(Enum):
    NEW = "new"  # nothing to continue: start from step 0
    RESUME = "resume"  # continue from the checkpoint found


def start_mode(checkpoint: Path, found_step: int | None, resume: bool, overwrite: bool, flag_out: str) -> Start:
    """Whether a command starts fresh or resumes, given what its output folder holds.

    Args:
        checkpoint: where the run's checkpoint lives.
        found_step: the step of the checkpoint there, ``None`` if there is none.
        resume: ``--resume`` (auto) was given: resume when there is a checkpoint.
        overwrite: ``--overwrite`` was given: an old run is moved aside (by the caller, on rank 0).
        flag_out: the flag that names the output (``--output-dir``, ``--out``), for the message.

    Raises:
        InputError: a checkpoint is there and neither flag says what to do with it,
            or both flags are given.
    """
    if resume and overwrite:
        raise InputError("--resume and --overwrite contradict each other: give one")
    if found_step is None or overwrite:
        return Start.NEW
    if resume:
        return Start.RESUME
    raise InputError(
        f"{checkpoint} holds a run at step {found_step}; this command would start a new one there: "
        f"continue it with --resume, give another {flag_out}, or pass --overwrite to move the old run aside"
    )


def move_aside(path: Path) -> Path | None:
    """Renames ``path`` to the first free ``NAME.old-N`` (files: ``STEM.old-N.SUFFIX``); returns the new path.

    ``None`` when ``path`` does not exist. The folder a process runs in, or
    one above it, is refused: renaming it would pull the ground from under it.
    """
    path = Path(path)
    if not path.exists():
        return None
    if path.is_dir() and Path.cwd().resolve().is_relative_to(path.resolve()):
        raise InputError(
            f"--overwrite would move {path} aside, the folder this command runs in: give a dedicated output folder"
        )
    stem, suffix = (path.stem, path.suffix) if path.is_file() else (path.name, "")
    n = 1
    while (target := path.with_name(f"{stem}.old-{n}{suffix}")).exists():
        n += 1
    os.rename(path, target)
    return target


def refuse_existing(path: Path, what: str) -> None:
    """One line when ``path`` exists: this command never replaces an earlier result."""
    if Path(path).exists():
        raise InputError(f"{what} {path} exists; give another --out, or pass --overwrite to move the old one aside")
