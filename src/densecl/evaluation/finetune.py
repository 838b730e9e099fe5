"""What the fine-tuning protocols share: batches split over ranks, DDP and SyncBN wrapping.

Every rank walks the same seeded stream of ``(image index, augmentation seed)``
pairs and takes its own slice of each global batch, so a run is reproducible
for a seed and world size, and the augmentation of a sample does not depend
on which data-loader worker draws it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from densecl import checkpoint, distributed
from densecl.engine import NonFiniteWatch
from densecl.errors import InputError


def per_rank_batch(global_batch: int) -> int:
    world = distributed.world_size()
    if global_batch % world:
        raise InputError(f"--batch-size {global_batch} is not divisible by the {world} processes; make it a multiple")
    return global_batch // world


class BatchStream:
    """``iters`` batches for this rank: lists of ``(index, sample_seed)`` for a Dataset.

    Indices follow seeded epoch permutations of ``range(n)``; sample seeds are
    drawn from the same generator, so they differ between epochs.
    Usable as a DataLoader ``batch_sampler``. ``start`` skips the batches a
    resumed run has trained on.
    """

    def __init__(self, n: int, global_batch: int, iters: int, seed: int, start: int = 0) -> None:
        self.n, self.global_batch, self.iters, self.seed, self.start = n, global_batch, iters, seed, start
        self.per_rank = per_rank_batch(global_batch)
        self.rank = distributed.rank()

    def __len__(self) -> int:
        return self.iters - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, 7919])
        pool: list[tuple[int, int]] = []
        for step in range(self.iters):
            while len(pool) < self.global_batch:
                order = rng.permutation(self.n)
                seeds = rng.integers(0, 2**31 - 1, size=self.n)
                pool.extend(zip(order.tolist(), seeds.tolist()))
            batch, pool = pool[: self.global_batch], pool[self.global_batch :]
            if step < self.start:  # a resumed run: drawn to keep the stream, not trained on again
                continue
            yield batch[self.rank * self.per_rank : (self.rank + 1) * self.per_rank]


def prepare_model(model: nn.Module, device: str, sync_bn: bool) -> nn.Module:
    """Moves to ``device``; under torchrun converts BatchNorm to SyncBatchNorm (CUDA only) and wraps in DDP."""
    if distributed.world_size() > 1 and sync_bn:
        if device.startswith("cuda"):
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif distributed.rank() == 0:
            print(
                "densecl eval: warning: SyncBatchNorm needs CUDA; on CPU each process normalises its own batch",
                file=sys.stderr,
            )
    model.to(device)
    if distributed.world_size() > 1:
        device_ids = [torch.device(device).index] if device.startswith("cuda") else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    return model


class LossWatch:
    """When a fine-tuning loop looks at its loss: never per step (a GPU step would wait for the host).

    The loss of every iteration is recorded on the device; the host reads the
    record at a log step, before a checkpoint is written and at the last
    iteration, in one collective over the ranks, so a NaN on any rank stops
    every rank, before it could reach a checkpoint (the CLI exits with status 1).
    """

    def __init__(self, protocol: str, advice: str, device: str, log_every: int, checkpoints: FinetuneCheckpoints):
        self.protocol, self.advice, self.log_every, self.checkpoints = protocol, advice, log_every, checkpoints
        self.watch = NonFiniteWatch(torch.device(device))

    def after(self, loss: torch.Tensor, step: int) -> bool:
        """Records the loss of iteration ``step`` (from 0); checks when due; True when this step should be logged.

        Raises:
            NonFiniteLossError: a loss so far was NaN or infinite on some rank.
        """
        self.watch.update(loss, step)
        done = step + 1
        log = bool(self.log_every) and done % self.log_every == 0
        if log or self.checkpoints.due(done):
            self.watch.check(self.protocol, self.advice)
        return log

    def optimise(
        self,
        loss: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        step: int,
        iters: int,
        start: float,
        details: Callable[[], str] = lambda: "",
    ) -> None:
        """One optimizer step on ``loss``, then :meth:`after`; at a log step rank 0 prints one progress line
        (``details()``, e.g. the loss's parts, is read only then: no device sync at other steps)."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if self.after(loss, step) and distributed.rank() == 0:
            print(
                f"{self.protocol} iter {step + 1}/{iters} loss {loss.item():.4f}{details()} "
                f"lr {optimizer.param_groups[0]['lr']:.5f} ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# --------------------------------------------------------------------------- checkpoints of one seed's fine-tuning

FORMAT = "densecl-finetune"
VERSION = 1
# config fields a resumed run may change: where and how it runs, not what it computes
RUN_ONLY_FIELDS = frozenset(
    {"save_every", "resume", "checkpoint_dir", "workers", "log_every", "device", "dist_timeout", "save_detector"}
)


def checkpoint_path(folder: str | Path, seed: int) -> Path:
    return Path(folder) / f"seed{seed}.pt"


def found_checkpoints(folder: str | Path) -> list[Path]:
    return sorted(Path(folder).glob("seed*.pt")) if folder else []


class FinetuneCheckpoints:
    """One seed's fine-tuning state (model, optimizer, step, every rank's RNG) in ``folder/seed<S>.pt``.

    Written atomically by rank 0 every ``every`` iterations and at the end; a
    resumed seed continues at the saved step with the saved RNG, so in
    deterministic settings it ends where an uninterrupted run ends. A seed
    whose file holds the last step is not trained again, only evaluated.
    """

    def __init__(self, folder: str, every: int, protocol: str, seed: int, iters: int, config: dict) -> None:
        self.path = checkpoint_path(folder, seed) if folder else None
        self.every, self.protocol, self.seed, self.iters = every, protocol, seed, iters
        self.config = {k: v for k, v in config.items() if k not in RUN_ONLY_FIELDS}
        self.resumed_from: int | None = None
        self._rng: object = None  # this rank's RNG state at the saved step, set by restore()

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
        """Loads the seed's checkpoint if there is one; returns the step to start at (0: none).

        Then build the data loader from that step and take its batches from
        :meth:`batches`, which puts back this rank's RNG state at the right moment.
        """
        self._rng = None
        if self.path is None or not self.path.exists():
            return 0
        state = _read(self.path)
        changed = sorted(
            k for k in set(self.config) | set(state["config"]) if self.config.get(k) != state["config"].get(k)
        )
        if state["protocol"] != self.protocol or state["seed"] != self.seed or changed:
            what = f"settings {', '.join(changed)}" if changed else f"protocol {state['protocol']} seed {state['seed']}"
            raise InputError(
                f"{self.path} was written with other {what}: resume with the same settings, "
                "or give another --out (or --checkpoint-dir), or pass --overwrite to move it aside"
            )
        if state["world_size"] != distributed.world_size():
            raise InputError(
                f"{self.path} was written by {state['world_size']} processes, this run has {distributed.world_size()}: "
                "resume with the same number"
            )
        unwrap(model).load_state_dict(state["model"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
        self.resumed_from = int(state["step"])
        if distributed.rank() == 0:
            print(
                f"densecl eval {self.protocol}: seed {self.seed} resumes at iteration {self.resumed_from} from "
                f"{self.path}"
            )
        self._rng = state["rng"][distributed.rank()]
        return self.resumed_from

    def batches(self, loader: torch.utils.data.DataLoader) -> Iterator:
        """``loader``'s iterator, with the restored RNG state set after it is made.

        Making the iterator draws from the RNG (the workers' base seed), as it
        did at step 0 of the first run; the training steps then draw what they
        drew after the saved step.
        """
        batches = iter(loader)
        if self._rng is not None:
            checkpoint.set_rng_state(self._rng)
        return batches

    def due(self, step: int) -> bool:
        """Whether :meth:`maybe_save` writes after ``step`` iterations: every ``every`` and at the end.

        The end is a check point even without a checkpoint file (the loss is looked at before evaluating).
        """
        return step == self.iters or (self.path is not None and bool(self.every) and step % self.every == 0)

    def maybe_save(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """After iteration ``step`` (1-based count of iterations done): save when due, and at the end."""
        if self.path is None or not self.due(step):
            return
        rng = distributed.gather_objects(checkpoint.rng_state())  # every rank's, so each continues its own stream
        if distributed.rank() == 0:
            state = {
                "format": FORMAT,
                "version": VERSION,
                "protocol": self.protocol,
                "seed": self.seed,
                "step": step,
                "iters": self.iters,
                "world_size": distributed.world_size(),
                "config": self.config,
                "model": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "rng": rng,
            }
            checkpoint.write_atomic(self.path, state)
        distributed.barrier()


def _read(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types for bad files
        raise InputError(
            f"cannot read fine-tuning checkpoint {path} ({type(e).__name__}): is the file complete?"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("version") != VERSION:
        raise InputError(f"{path} is not a densecl fine-tuning checkpoint of version {VERSION}")
    return state


def checkpoint_step(path: Path) -> int:
    return int(_read(path)["step"])
