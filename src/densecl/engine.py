"""The epoch loop: schedules in, one DenseCL step per batch, metrics and checkpoints out."""

from __future__ import annotations

import inspect
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from densecl import distributed
from densecl.config import PretrainConfig
from densecl.errors import NonFiniteLossError
from densecl.precision import Precision
from densecl.schedules import cosine_lr, dense_positives_at, loss_lambda_at
from densecl.training_log import MeanMeter, MetricsLog


@dataclass
class LoopState:
    step: int  # iterations done, over the whole run
    total_steps: int  # epochs * iterations per epoch: the cosine schedule's length
    stop_requested: Callable[[], bool]  # SIGINT / SIGTERM arrived
    meter: MeanMeter = field(default_factory=MeanMeter)  # since the last metrics line, which may be in the last epoch
    saved_step: int = -1  # the step of the last checkpoint written (or resumed from): a save there is a no-op


def progress(state: LoopState, enabled: bool) -> tqdm:
    """One progress bar for the whole run (its description names the epoch), however short the epochs are."""
    return tqdm(
        total=state.total_steps, initial=state.step, disable=not enabled, dynamic_ncols=True, mininterval=2.0,
        unit="it",
    )  # fmt: skip


def train_one_epoch(
    model: torch.nn.Module,
    loader: torch.utils.data.DataLoader,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    precision: Precision,
    cfg: PretrainConfig,
    epoch: int,
    state: LoopState,
    log: MetricsLog,
    save: Callable[[], None],
    device: torch.device,
    bar: tqdm,
) -> bool:
    """Trains until the epoch ends, ``max_iters`` is reached, or a stop is requested.

    ``model`` may be DDP-wrapped; it is called as ``model(im_q, im_k, loss_lambda=..., match=..., positives=...)``.
    Returns ``True`` if training should stop (signal or ``max_iters``), with a
    checkpoint already written.

    The host waits for the device only at a check: every ``log_every``
    iterations, before every save and at the end of the epoch. Losses and
    the non-finite watch stay on the device in between, and under DDP the
    stop flag travels with the check, so a GPU step is never stalled by a
    per-iteration ``.item()`` or collective. What is computed does not depend
    on where the checks fall.

    Raises:
        NonFiniteLossError: a loss was NaN or infinite; raised at the next check,
            so before any save: the last checkpoint stays as it was.
    """
    meter, watch, skipped_in_epoch = state.meter, NonFiniteWatch(device), 0
    one_process = distributed.world_size() == 1
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    bar.set_description(f"epoch {epoch}", refresh=False)
    t_end = time.perf_counter()
    for im_q, im_k, match, skipped in loader:
        t_data = time.perf_counter() - t_end
        skipped_in_epoch += int(skipped.sum())  # a CPU tensor from the loader: no device sync
        im_q = im_q.to(device, non_blocking=True, memory_format=memory_format)
        im_k = im_k.to(device, non_blocking=True, memory_format=memory_format)
        match = match.to(device, non_blocking=True) if match.shape[1] else None  # N x S, or feature matching

        lr = cosine_lr(state.step, state.total_steps, cfg.scaled_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        lam = loss_lambda_at(state.step, cfg.loss_lambda, cfg.lambda_warmup_iters)
        positives = dense_positives_at(state.step, cfg.dense_matching, cfg.dense_matching_switch)

        with precision.autocast():
            out = model(im_q, im_k, loss_lambda=lam, match=match, positives=positives)
        watch.update(out.loss, state.step)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(out.loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            out.loss.backward()
            optimizer.step()
        state.step += 1
        bar.update()

        log_now = state.step % cfg.log_every == 0
        save_now = any(every and state.step % every == 0 for every in (cfg.save_every, cfg.keep_every))
        at_max = cfg.max_iters is not None and state.step >= cfg.max_iters
        stop = one_process and state.stop_requested()  # free in one process; under DDP it waits for the check
        check_now = log_now or save_now or at_max or stop
        if check_now:
            stop = _check(watch, state, epoch, cfg)
        iter_time = (
            time.perf_counter() - t_end
        )  # host time; over an interval it adds up to the device's (a check waits)
        dense = {} if out.loss_dense is None else {"loss_dense": out.loss_dense, "acc_dense": 100 * out.accuracy_dense}
        meter.update(  # MoCo-v2 has no dense task: no loss_dense, no acc_dense
            loss=out.loss,
            loss_global=out.loss_global,
            acc_global=100 * out.accuracy_global,  # top-1 %, the health signals
            **dense,
            data_time=t_data,
            iter_time=iter_time,
        )
        if check_now:
            if log_now or ((stop or at_max) and meter.count):  # a run that stops logs its last, shorter interval too
                _log(meter, log, bar, state.step, epoch, lr, lam, cfg.batch_size)
            if stop or at_max or save_now:
                save()
            if stop or at_max:
                return True
        t_end = time.perf_counter()
    if _check(watch, state, epoch, cfg):  # the epoch's last look, before the caller saves its checkpoint
        save()
        return True
    if state.step >= state.total_steps and meter.count:  # the run's last iterations, short of a whole interval
        _log(meter, log, bar, state.step, epoch, lr, lam, cfg.batch_size)
    log.write({"epoch": epoch, "step": state.step, "skipped_images": skipped_in_epoch})
    if skipped_in_epoch:
        print(f"densecl: epoch {epoch}: skipped {skipped_in_epoch} unreadable images")
    return False


class NonFiniteWatch:
    """The first iteration whose loss was NaN or infinite, remembered on the device (no host sync per step)."""

    def __init__(self, device: torch.device) -> None:
        self.step = torch.full((), -1, dtype=torch.int64, device=device)  # -1: every loss so far was finite
        self.loss = torch.zeros((), device=device)

    def update(self, loss: torch.Tensor, step: int) -> None:
        new = (self.step < 0) & ~torch.isfinite(loss.detach())
        self.step = torch.where(new, step, self.step)
        self.loss = torch.where(new, loss.detach().float(), self.loss)

    def first(self) -> tuple[int, float] | None:
        """``(iteration, loss)`` of the first non-finite loss, or None. Waits for the device."""
        step = int(self.step)
        return None if step < 0 else (step, float(self.loss))

    def check(self, where: str, advice: str, stop: bool = False) -> bool:
        """The host's look at the device: raises on a non-finite loss on any rank; True if any rank asks to stop.

        One collective under DDP (both flags together), so all ranks stop, or
        fail, at the same iteration, whichever rank saw the NaN.

        Raises:
            NonFiniteLossError: ``"where: loss is nan at iteration 7; advice"``.
        """
        bad = self.first()
        flags = torch.tensor([float(bad is not None), float(stop)])
        if distributed.world_size() > 1:
            flags = distributed.all_reduce_mean(flags)
        if flags[0] > 0:
            what = f"loss is {bad[1]} at iteration {bad[0]}" if bad else "loss is not finite on another rank"
            raise NonFiniteLossError(f"{where}: {what}; {advice}")
        return bool(flags[1] > 0)


def _check(watch: NonFiniteWatch, state: LoopState, epoch: int, cfg: PretrainConfig) -> bool:
    """Pre-training's look: a NaN stops the run before any save; True if any rank got a stop signal."""
    advice = (
        f"stopped without saving, the last checkpoint in {cfg.output_dir} is intact: lower lr or use --precision fp32"
    )
    return watch.check(f"epoch {epoch}", advice, state.stop_requested())


def _log(
    meter: MeanMeter, log: MetricsLog, bar: tqdm, step: int, epoch: int, lr: float, lam: float, global_batch: int
) -> None:
    """One metrics line: the interval's means, over all ranks in one collective."""
    means = meter.pop()
    if distributed.world_size() > 1:
        reduced = distributed.all_reduce_mean(torch.tensor(list(means.values()), dtype=torch.float64))
        means = dict(zip(means, reduced.tolist()))
    pairs_per_s = global_batch / max(means["iter_time"], 1e-9)
    log.write({"step": step, "epoch": epoch, "lr": lr, "lambda": lam, "pairs_per_s": pairs_per_s, **means})
    dense = {"acc_d": f"{means['acc_dense']:.0f}%"} if "acc_dense" in means else {}  # MoCo-v2 has no dense task
    bar.set_postfix(
        loss=f"{means['loss']:.3f}", acc_g=f"{means['acc_global']:.0f}%", **dense, lr=f"{lr:.3g}",
        pairs_s=f"{pairs_per_s:.1f}",
    )  # fmt: skip


def make_sgd(params, lr: float, momentum: float, weight_decay: float, device_type: str) -> torch.optim.SGD:
    """The recipe's SGD with its update in few kernels: fused on CUDA where torch has it, multi-tensor elsewhere.

    Chosen without measuring: both compute the per-parameter loop's update
    (``foreach`` exactly, on the CPU too), in one or a few kernel launches
    instead of several per parameter tensor.
    """
    if device_type == "cuda" and "fused" in inspect.signature(torch.optim.SGD).parameters:
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=True)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, foreach=True)


# --------------------------------------------------------------------------- stopping on a signal


def ignore_stop_signals(worker_id: int) -> None:
    """Data workers leave SIGINT/SIGTERM to the main process, which saves and then stops them.

    (Ctrl-C reaches the whole process group; a worker that died of it would
    crash the main process before it could save.)
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def stop_workers(batches) -> None:
    """Ends the persistent data workers behind ``batches`` (a DataLoader, or what wraps one as ``.loader``) now,
    when an error (a data worker's too) ends the run.

    The workers ignore SIGTERM (:func:`ignore_stop_signals`), so the terminate that multiprocessing sends its
    children at interpreter exit does not end them, and the exception's traceback keeps the loader's iterator
    (whose clean-up would) alive until then: the process would print its error and never exit.
    """
    loader = getattr(batches, "loader", batches)
    iterator = getattr(loader, "_iterator", None)  # the persistent workers' iterator (torch keeps it there)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()


def install_stop_handlers():
    """SIGINT/SIGTERM set a flag; the loop saves at the next iteration boundary and exits.

    A second SIGINT interrupts at once (the last checkpoint stays intact).
    """
    received: list[int] = []

    def handler(signum, frame):
        if received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        received.append(signum)
        print(f"\ndensecl: got signal {signum}, saving at the next iteration boundary", file=sys.stderr)

    try:
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: no handlers, no graceful stop
        pass
    return lambda: bool(received)
