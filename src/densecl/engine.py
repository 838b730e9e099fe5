"""The epoch loop: schedules in, one DenseCL step per batch, metrics and checkpoints out."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm import tqdm

from densecl import distributed
from densecl.config import PretrainConfig
from densecl.errors import NonFiniteLossError
from densecl.training_log import MeanMeter, MetricsLog
from densecl.schedules import cosine_lr, loss_lambda_at


@dataclass
class Precision:
    """How the forward runs: autocast dtype (None = fp32) and whether a grad scaler is needed."""

    dtype: torch.dtype | None
    device_type: str

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


@dataclass
class LoopState:
    step: int  # iterations done, over the whole run
    total_steps: int  # epochs * iterations per epoch: the cosine schedule's length
    stop_requested: Callable[[], bool]  # SIGINT / SIGTERM arrived


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
) -> bool:
    """Trains until the epoch ends, ``max_iters`` is reached, or a stop is requested.

    ``model`` may be DDP-wrapped; it is called as ``model(im_q, im_k, loss_lambda=..., match=...)``.
    Returns ``True`` if training should stop (signal or ``max_iters``), with a
    checkpoint already written.

    Raises:
        NonFiniteLossError: the loss was NaN or infinite; nothing is saved.
    """
    meter, skipped_in_epoch = MeanMeter(), 0
    global_batch = cfg.batch_size
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    bar = tqdm(loader, desc=f"epoch {epoch}", disable=not log.enabled, dynamic_ncols=True, mininterval=2.0)
    t_end = time.perf_counter()
    for im_q, im_k, match, skipped in bar:
        t_data = time.perf_counter() - t_end
        skipped_in_epoch += int(skipped.sum())
        im_q = im_q.to(device, non_blocking=True, memory_format=memory_format)
        im_k = im_k.to(device, non_blocking=True, memory_format=memory_format)
        match = match.to(device, non_blocking=True) if match.shape[1] else None  # N x S, or feature matching

        lr = cosine_lr(state.step, state.total_steps, cfg.scaled_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        lam = loss_lambda_at(state.step, cfg.loss_lambda, cfg.lambda_warmup_iters)

        with precision.autocast():
            out = model(im_q, im_k, loss_lambda=lam, match=match)
        if not torch.isfinite(out.loss):
            raise NonFiniteLossError(
                f"loss is {out.loss.item()} at iteration {state.step} (epoch {epoch}); stopped without saving, "
                f"the last checkpoint in {cfg.output_dir} is intact: lower lr or use --precision fp32"
            )
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(out.loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            out.loss.backward()
            optimizer.step()
        state.step += 1

        iter_time = time.perf_counter() - t_end
        t_end = time.perf_counter()
        meter.update(
            loss=out.loss.detach(),
            loss_global=out.loss_global.detach(),
            loss_dense=out.loss_dense.detach(),
            data_time=t_data,
            iter_time=iter_time,
        )
        if state.step % cfg.log_every == 0:
            means = meter.pop()
            means = {k: float(distributed.all_reduce_mean(torch.tensor(v))) for k, v in means.items()}
            pairs_per_s = global_batch / max(means["iter_time"], 1e-9)
            log.write({"step": state.step, "epoch": epoch, "lr": lr, "lambda": lam, "pairs_per_s": pairs_per_s, **means})
            bar.set_postfix(loss=f"{means['loss']:.3f}", lr=f"{lr:.3g}", pairs_s=f"{pairs_per_s:.1f}")

        stop = _any_rank(state.stop_requested())
        at_max = cfg.max_iters is not None and state.step >= cfg.max_iters
        if stop or at_max or (cfg.save_every and state.step % cfg.save_every == 0):
            save()
        if stop or at_max:
            bar.close()
            return True
    log.write({"epoch": epoch, "step": state.step, "skipped_images": skipped_in_epoch})
    if skipped_in_epoch:
        print(f"densecl: epoch {epoch}: skipped {skipped_in_epoch} unreadable images")
    return False


def _any_rank(flag: bool) -> bool:
    """True if any rank got the signal, so that all ranks stop at the same iteration."""
    if distributed.world_size() == 1:
        return flag
    t = torch.tensor([float(flag)])
    return bool(distributed.all_reduce_mean(t) > 0)
