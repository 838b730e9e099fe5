"""Full training state on disk: the one owner of its schema, written atomically, read strictly.

A checkpoint is a ``torch.save``d dict that describes itself::

    format: "densecl", version: 1
    config:          the resolved PretrainConfig as a dict
    model:           DenseCL.state_dict(): both encoders, both queues and pointers
    optimizer:       the SGD state dict
    scaler:          the GradScaler state dict (None unless fp16)
    step, epoch:     iterations done over the whole run, and epochs done
    iters_per_epoch: iterations in one epoch (resuming needs the same)
    rng:             torch CPU (and CUDA) generator states
    world_size:      processes that trained it (absent in the earliest files)

Nothing in it needs pickle beyond tensors and plain Python values, so it
loads with ``torch.load(..., weights_only=True)``. Inspect one with
``densecl checkpoint info PATH``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from densecl import distributed
from densecl.errors import InputError, StorageError

FORMAT = "densecl"
VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"  # in the run's output_dir
NUMBERED_NAME = "checkpoint_{step:07d}.pt"  # --keep-every: a run's points worth evaluating later, never overwritten


@dataclass
class TrainingState:
    """Everything a run needs to continue exactly where it stopped."""

    config: dict[str, Any]  # PretrainConfig.to_dict()
    model: dict[str, torch.Tensor]  # DenseCL.state_dict()
    optimizer: dict[str, Any]
    scaler: dict[str, Any] | None
    step: int
    epoch: int
    iters_per_epoch: int
    rng: dict[str, Any]  # from rng_state()
    world_size: int | None = None

    def planned_steps(self, epochs: int | None = None) -> int:
        """Iterations in ``epochs`` epochs (default: the epochs its config names)."""
        return (self.config["epochs"] if epochs is None else epochs) * self.iters_per_epoch

    def finished(self, epochs: int | None = None) -> bool:
        """True when the run has done all its (or ``epochs``) epochs; a stopped run saves earlier."""
        return self.step >= self.planned_steps(epochs)

    def summary(self, epochs: int | None = None) -> dict[str, Any]:
        """Progress and recipe as plain values (what ``densecl checkpoint info`` prints)."""
        return {
            "step": self.step,
            "epoch": self.epoch,
            "iters_per_epoch": self.iters_per_epoch,
            "epochs": self.config["epochs"] if epochs is None else epochs,
            "planned_steps": self.planned_steps(epochs),
            "finished": self.finished(epochs),
            "arch": self.config.get("arch"),
            "loss_lambda": self.config.get("loss_lambda"),
            "world_size": self.world_size,
            "config": self.config,
        }


_FIELDS = tuple(f.name for f in dataclasses.fields(TrainingState))
_REQUIRED = tuple(f.name for f in dataclasses.fields(TrainingState) if f.default is dataclasses.MISSING)


def save(path: str | os.PathLike, state: TrainingState) -> None:
    """Writes ``state`` to a temporary file in the same folder, then renames it over ``path``.

    A crash or a full disk mid-write leaves the previous checkpoint intact.
    """
    write_atomic(path, {"format": FORMAT, "version": VERSION, **{name: getattr(state, name) for name in _FIELDS}})


def write_atomic(path: str | os.PathLike, payload: Any) -> None:
    """``torch.save`` to a temporary file in the same folder, ``fsync``, then a rename over ``path``.

    Readers see the old file or the new one, never half of one. A killed
    writer leaves a ``.NAME.*.tmp`` file, which the next write removes.

    Raises:
        StorageError: the write failed (disk full, quota, file-size limit);
            the file at ``path`` is the one there before.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a writer killed mid-save; never the file of record
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)  # the rename itself survives a power cut only once the folder is on disk
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as a RuntimeError
        Path(tmp).unlink(missing_ok=True)
        before = f"the {path.name} there before is intact" if path.exists() else f"no {path.name} was there before"
        reason = e.strerror if isinstance(e, OSError) and e.strerror else "disk full, quota or file-size limit"
        raise StorageError(
            f"cannot write {path} ({reason}); {before}: free disk space (or raise the limit), then resume"
        ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fsync_dir(folder: Path) -> None:
    """Flushes a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder; the rename is then as durable as they make it
        pass
    finally:
        os.close(fd)


def keep_numbered(path: Path, step: int) -> Path | None:
    """A numbered copy of the checkpoint just written at ``path`` (``checkpoint_0001000.pt``), for ``--keep-every``.

    A hard link where the file system has them (no second write; the next
    save replaces ``path`` by a new file and leaves the link's content), else
    an atomic copy. An existing numbered file is kept as it is (a resumed run
    reaching the same step again): returns None then.

    Raises:
        StorageError: the copy failed (disk full, quota); ``path`` is intact and
            no partial copy is left.
    """
    target = path.with_name(NUMBERED_NAME.format(step=step))
    if target.exists():
        return None
    for stale in path.parent.glob(f".{target.name}.*.tmp"):  # a copy killed mid-write, by an earlier run
        stale.unlink(missing_ok=True)
    try:
        os.link(path, target)
    except OSError:  # no hard links here (another file system, FAT, some network mounts): copy
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        except OSError as e:
            Path(tmp).unlink(missing_ok=True)
            raise StorageError(
                f"cannot keep {target.name} ({e.strerror or 'disk full, quota or file-size limit'}); {path.name} "
                "is intact: free disk space (or raise the limit), then resume"
            ) from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    fsync_dir(path.parent)
    return target


def load(path: str | os.PathLike) -> TrainingState:
    """Reads a training checkpoint written by :func:`save`.

    Raises:
        InputError: missing, unreadable, not a densecl training checkpoint, of
            another version, or lacking or adding entries.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types for bad files
        raise InputError(f"cannot read checkpoint {path} ({type(e).__name__}): is the file complete?") from None
    if not is_training_checkpoint(state):
        raise InputError(f"{path} is not a densecl training checkpoint (for other weights use --init)")
    check_version(state, str(path))
    missing = [k for k in _REQUIRED if k not in state]
    extra = [k for k in state if k not in (*_FIELDS, "format", "version")]
    if missing or extra:
        found = f"lacks {', '.join(missing)}" if missing else f"holds unknown entries {', '.join(map(str, extra))}"
        raise InputError(
            f"{path} {found}; a densecl version-{VERSION} training checkpoint has {', '.join(_FIELDS)}: "
            "pass one written by densecl pretrain (for other weights use --init)"
        )
    return TrainingState(**{k: state[k] for k in _FIELDS if k in state})


def is_training_checkpoint(obj: Any) -> bool:
    """Whether ``obj`` (a loaded file) says it is a densecl training checkpoint."""
    return isinstance(obj, Mapping) and obj.get("format") == FORMAT


def check_version(obj: Mapping[str, Any], where: str) -> None:
    if obj.get("version") != VERSION:
        raise InputError(
            f"{where} is a densecl checkpoint of version {obj.get('version')!r}; "
            f"this densecl reads version {VERSION}, upgrade densecl"
        )


def model_and_config(obj: Mapping[str, Any], where: str) -> tuple[Any, Any]:
    """The model state dict and the config of a training checkpoint, for readers of its weights only.

    Lenient about the training entries (optimizer, rng, ...), which weights do not need.
    """
    check_version(obj, where)
    return obj.get("model"), obj.get("config") or {}


def check_ranks_agree(resume: TrainingState | None, path: Path) -> None:
    """Every rank read the output folder itself: one line when they would start at different steps."""
    starts = distributed.gather_ints(-1 if resume is None else int(resume.step))
    if len(set(starts)) > 1:  # a stale shared file system shows here
        raise InputError(
            f"the ranks would start at different steps ({', '.join(map(str, starts))}, -1 = new run): "
            f"every rank must see the same {path}; put output_dir on a file system all nodes share"
        )


MODEL_KEYS = (
    "arch",
    "in_channels",
    "hidden_dim",
    "out_dim",
    "queue_len",
    "dense_queue_len",
)  # config fields that shape the weights


def restore(state: TrainingState, model: torch.nn.Module, optimizer, scaler, iters_per_epoch: int, cfg: Any) -> int:
    """Loads ``state`` into a run's model, optimizer, scaler and RNG; returns its step.

    One line (before anything is written) when it does not fit: another model
    (:data:`MODEL_KEYS`), another number of iterations per epoch (other data
    or batch size), or weights of other shapes. The optimizer keeps this run's
    implementation (foreach / fused), whatever the writer's was.
    """
    where = f"the checkpoint of {cfg.output_dir} (step {state.step})"
    changed = [
        f"{k} {state.config.get(k)!r} -> {getattr(cfg, k)!r}"
        for k in MODEL_KEYS
        if state.config.get(k, getattr(cfg, k)) != getattr(cfg, k)
    ]
    if changed:
        raise InputError(
            f"{where} holds another model ({'; '.join(changed)}): resume without changing these, "
            "or start a new run with another --output-dir"
        )
    if state.iters_per_epoch != iters_per_epoch:
        raise InputError(
            f"{where} had {state.iters_per_epoch} iterations per epoch, this run has {iters_per_epoch}: "
            "resume with the same data and batch size, or start a new run with another --output-dir"
        )
    try:
        model.load_state_dict(state.model, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise InputError(
            f"{where} does not fit this model ({first}): start a new run with another --output-dir"
        ) from None
    implementation = {k: optimizer.param_groups[0][k] for k in ("foreach", "fused") if k in optimizer.param_groups[0]}
    optimizer.load_state_dict(state.optimizer)
    for group in optimizer.param_groups:  # the saved groups carry the writer's foreach / fused flags: keep this run's
        group.update(implementation)
    if scaler is not None and state.scaler:
        scaler.load_state_dict(state.scaler)
    set_rng_state(state.rng)
    return int(state.step)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
