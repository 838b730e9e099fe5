"""``densecl pretrain``: a straight run of setup steps, then the epoch loop.

densecl pretrain --config demo_cpu                       # CPU, embedded scenes
densecl pretrain --config densecl_r50_coco_800ep --data /data/coco/train2017
torchrun --nproc_per_node 8 -m densecl pretrain --config densecl_r50_imagenet_200ep --data /data/imagenet/train
densecl pretrain --resume runs/demo/checkpoint.pt        # continue exactly where it stopped
torchrun --max-restarts 3 --nproc_per_node 8 -m densecl pretrain --config ... --resume auto   # survives crashes
"""

from __future__ import annotations

import copy
import functools
import os
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

from densecl import checkpoint, distributed, run_dir
from densecl.config import PretrainConfig, auto_queue_len, c5_side
from densecl.data import gpu as gpu_data
from densecl.data.inputs import resolve_inputs
from densecl.data.sampler import EpochSampler
from densecl.data.sources import TwoViewDataset, image_source
from densecl.data.transforms import GeometricTwoViews
from densecl.devices import resolve_device
from densecl.engine import LoopState, make_sgd, train_one_epoch
from densecl.errors import InputError
from densecl.models.densecl import DenseCL
from densecl.precision import DTYPES, Precision, cache_key, choose_cpu_precision, resolve_precision
from densecl.training_log import MetricsLog


def pretrain(
    cfg: PretrainConfig,
    resume: checkpoint.TrainingState | None = None,
    overwrite: bool = False,
    precision_cache: Path | None = None,
) -> Path:
    """Trains DenseCL (MoCo-v2 if ``loss_lambda == 0``) and returns the checkpoint path.

    Args:
        cfg: the resolved configuration.
        resume: a state from :func:`densecl.checkpoint.load` to continue from.
        overwrite: a new run whose ``output_dir`` holds an earlier one moves
            that aside (``OUTPUT_DIR.old-N``); without it such a run stops.
        precision_cache: where ``precision: auto`` on a CPU remembers which of
            fp32 and bf16 it timed faster (None: time at every start).
    """
    out_dir = Path(cfg.output_dir)
    ckpt_path = out_dir / checkpoint.CHECKPOINT_NAME
    if resume is None and not overwrite and ckpt_path.exists():  # never start over a run silently
        run_dir.start_mode(
            ckpt_path, checkpoint.load(ckpt_path).step, resume=False, overwrite=False, flag_out="--output-dir"
        )
    device = resolve_device(cfg.device)
    info = distributed.setup(device.type, cfg.dist_timeout)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    cfg.validate(info.world_size)
    say = print if info.is_main else (lambda *a, **k: None)
    starts = distributed.gather_ints(-1 if resume is None else int(resume.step))
    if len(set(starts)) > 1:  # each rank read the output folder itself: a stale shared file system shows here
        raise InputError(
            f"the ranks would start at different steps ({', '.join(map(str, starts))}, -1 = new run): "
            f"every rank must see the same {ckpt_path}; put output_dir on a file system all nodes share"
        )
    _seed_everything(cfg.seed, cfg.deterministic)  # same on every rank: identical initial weights and queues

    # data: fail on a bad path before any model is built
    source = image_source(cfg.data, cfg.scenes_length, cfg.scenes_size, cfg.seed)
    cfg, inputs, input_line = resolve_inputs(cfg, source)  # channels, bands, mean/std: numbers from here on
    cfg = cfg.with_queues_for(len(source))  # "auto" queue lengths: from here on numbers, printed and stored
    per_rank_batch = cfg.batch_size // info.world_size
    sampler = EpochSampler(len(source), per_rank_batch, info.rank, info.world_size, cfg.seed)
    if sampler.batches_per_epoch == 0:
        raise InputError(f"{source.origin} has {len(source)} images, fewer than one global batch of {cfg.batch_size}")
    check_data_backend(cfg.data_backend, device)
    side = cfg.num_grid or c5_side(cfg.crop_size)
    two_views = GeometricTwoViews(
        cfg.crop_size,
        cfg.min_scale,
        (side, side) if cfg.dense_matching == "geometry" else None,
        inputs=inputs,
        jitter=cfg.jitter,
    )
    on_gpu = cfg.data_backend == "gpu"
    loader = torch.utils.data.DataLoader(
        gpu_data.EncodedTwoViewDataset(source, two_views) if on_gpu else TwoViewDataset(source, two_views),
        batch_size=per_rank_batch,
        sampler=sampler,
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=cfg.workers > 0,
        prefetch_factor=4 if cfg.workers > 0 else None,
        worker_init_fn=_ignore_stop_signals,
        collate_fn=gpu_data.collate if on_gpu else None,
    )
    # the gpu backend decodes and augments in this process, on the device; the CPU path remakes what it cannot decode
    batches = (
        gpu_data.DeviceBatches(loader, device, cfg.crop_size, TwoViewDataset(source, two_views)) if on_gpu else loader
    )
    iters_per_epoch = sampler.batches_per_epoch
    total_steps = cfg.epochs * iters_per_epoch

    # model, optimizer, precision
    model = DenseCL(
        cfg.arch,
        cfg.hidden_dim,
        cfg.out_dim,
        cfg.queue_len,
        cfg.momentum,
        cfg.temperature,
        cfg.loss_lambda,
        cfg.num_grid,
        dense_queue_len=cfg.dense_queue_len,
        bn_group_size=cfg.bn_group_size,
        in_channels=cfg.in_channels,
    )
    if cfg.init and resume is None:
        _init_backbone(model, cfg.init, say)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)

    def time_on_cpu() -> str:  # rank 0 times (or remembers), every rank takes its answer
        choice = "fp32"
        if info.is_main:
            step = _precision_probe(model, per_rank_batch, cfg.crop_size, cfg.channels_last)
            key = cache_key(cfg.arch, cfg.crop_size, per_rank_batch, cfg.channels_last)
            choice = choose_cpu_precision(step, key, precision_cache, say)
        return "bf16" if distributed.broadcast_flag(choice == "bf16") else "fp32"

    precision = resolve_precision(cfg.precision, device, time_on_cpu)
    optimizer = make_sgd(model.encoder.parameters(), cfg.scaled_lr, cfg.sgd_momentum, cfg.weight_decay, device.type)
    scaler = torch.amp.GradScaler(device.type) if precision.dtype == torch.float16 else None

    step = 0
    if resume is not None:
        step = _restore(resume, model, optimizer, scaler, iters_per_epoch, cfg)
    if cfg.compile:
        compile_encoders(model, per_rank_batch, cfg.crop_size, cfg.channels_last, precision, say)
    ddp_model = distributed.wrap_ddp(model, device)

    if info.is_main and resume is None and (overwrite or _holds_run_files(out_dir)):
        moved = run_dir.move_aside(out_dir)  # an older run, or logs of one that never saved: kept, never mixed in
        if moved:
            say(f"densecl pretrain: moved the earlier run in {out_dir} to {moved}")
    distributed.barrier()
    say(f"densecl pretrain: {'resuming at iteration ' + str(step) if resume else 'new run'} in {out_dir}")
    say(cfg.to_yaml().rstrip())
    say(input_line)
    say(
        f"data: {source.origin}, {len(source)} images, {iters_per_epoch} iterations/epoch, {total_steps} in all | "
        f"batch {cfg.batch_size} = {info.world_size} x {per_rank_batch}, batch norm over "
        f"{_bn_groups(cfg, per_rank_batch)} | "
        f"lr {cfg.lr} for 256 -> {cfg.scaled_lr:g} | "
        f"{device.type} {precision.name}{' channels_last' if cfg.channels_last else ''} | "
        f"C5 grid {c5_side(cfg.crop_size)}x{c5_side(cfg.crop_size)}, dense grid "
        f"{cfg.num_grid or c5_side(cfg.crop_size)}"
    )

    warning = queue_warning(cfg, len(source), iters_per_epoch * cfg.batch_size)
    if warning:
        say(f"densecl pretrain: warning: {warning}", file=sys.stderr)

    log = MetricsLog(out_dir, enabled=info.is_main, resume_step=step if resume is not None else None)
    loop = LoopState(step=step, total_steps=total_steps, stop_requested=_install_stop_handlers())

    def save() -> None:
        if info.is_main:
            state = checkpoint.TrainingState(
                config=cfg.to_dict(),
                model=model.state_dict(),
                optimizer=optimizer.state_dict(),
                scaler=scaler.state_dict() if scaler else None,
                step=loop.step,
                epoch=loop.step // iters_per_epoch,
                iters_per_epoch=iters_per_epoch,
                rng=checkpoint.rng_state(),
                world_size=info.world_size,
            )
            checkpoint.save(ckpt_path, state)
        distributed.barrier()

    t0 = time.time()
    try:
        for epoch in range(step // iters_per_epoch, cfg.epochs):
            if cfg.max_iters is not None and loop.step >= cfg.max_iters:
                break
            sampler.epoch, sampler.start_batch = epoch, loop.step - epoch * iters_per_epoch
            model.train()
            stopped = train_one_epoch(
                ddp_model, batches, optimizer, scaler, precision, cfg, epoch, loop, log, save, device
            )
            if stopped:
                break
            save()
    except BaseException:
        stop_workers(loader)  # else the process hangs at exit: see stop_workers
        raise
    finally:
        log.close()
    if loop.stop_requested():
        say(f"densecl pretrain: stopped by signal at iteration {loop.step}; resume with --resume {ckpt_path}")
    if on_gpu and (batches.cpu_decoded or batches.remade):
        say(
            f"densecl pretrain: data backend gpu: {batches.cpu_decoded} images were not plain JPEGs and were "
            "decoded on the "
            f"CPU by the data workers; {batches.remade} JPEGs the GPU could not decode were remade by the CPU path"
        )
    say(
        f"densecl pretrain: {loop.step} iterations in {time.time() - t0:.0f} s; checkpoint {ckpt_path}, metrics "
        f"{log.path}"
    )
    distributed.teardown()
    return ckpt_path


def queue_warning(cfg: PretrainConfig, n_images: int, keys_per_epoch: int) -> str | None:
    """One line when a queue is longer than the data set: its negatives then include earlier keys of each query's own
    image (one per epoch the queue spans), more alike as training settles; None when both queues are shorter."""
    queues = {"queue_len": cfg.queue_len, "dense_queue_len": cfg.dense_queue_len or cfg.queue_len}
    long = {name: length for name, length in queues.items() if length > n_images}
    if not long:
        return None
    fix = auto_queue_len(n_images, cfg.batch_size)
    held = ", ".join(
        f"{name} {length} holds {length / keys_per_epoch:.1f} keys of each image" for name, length in long.items()
    )
    flags = " and ".join(f"--{name.replace('_', '-')} auto" for name in long)
    return (
        f"{held} of the {n_images} images, its own among a query's negatives; {flags} ({fix}, the largest multiple "
        f"of the batch {cfg.batch_size} below the number of images) avoids it"
    )


def _bn_groups(cfg: PretrainConfig, per_rank_batch: int) -> str:
    if cfg.bn_group_size is None or cfg.bn_group_size == per_rank_batch:
        return f"each process's {per_rank_batch} images"
    return f"{per_rank_batch // cfg.bn_group_size} groups of {cfg.bn_group_size} per process"


def check_data_backend(backend: str, device: torch.device) -> None:
    """Raises :class:`InputError` for ``--data-backend gpu`` on a run without a CUDA device."""
    if backend == "gpu" and device.type != "cuda":
        raise InputError(
            f"--data-backend gpu decodes and augments on a CUDA GPU, but this run is on the {device.type}; "
            "use --data-backend cpu"
        )


def _precision_probe(model: DenseCL, batch: int, crop: int, channels_last: bool):
    """``step(name)``: one step of the work precision changes, on copies of the run's encoders.

    The query encoder's forward and backward, the key encoder's forward and
    SGD, as in training; the losses are left out because they run in fp32 at
    either precision and cost the same in both. Copies (made at the first
    call, so a cached choice costs nothing), a fixed input and no collective:
    the run's weights, BN statistics, RNG and other ranks are untouched.
    """

    @functools.cache
    def parts():
        encoder, momentum_encoder = copy.deepcopy(model.encoder), copy.deepcopy(model.momentum_encoder)
        optimizer = make_sgd(encoder.parameters(), 1e-3, 0.9, 1e-4, "cpu")
        x = _trial_input(batch, crop, channels_last, torch.device("cpu"), model.in_channels)
        return encoder, momentum_encoder, optimizer, x

    def step(name: str) -> None:
        encoder, momentum_encoder, optimizer, x = parts()
        optimizer.zero_grad(set_to_none=True)
        _encoders_step(encoder, momentum_encoder, x, Precision(DTYPES[name], "cpu"))
        optimizer.step()

    return step


def _trial_input(batch: int, crop: int, channels_last: bool, device: torch.device, channels: int = 3) -> torch.Tensor:
    """A fixed ``batch x channels x crop x crop`` input in the run's layout, for the steps run before training."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch, channels, crop, crop, generator=torch.Generator().manual_seed(0))
    return x.to(device).contiguous(memory_format=fmt)


def _encoders_step(
    encoder: torch.nn.Module, momentum_encoder: torch.nn.Module, x: torch.Tensor, precision: Precision
) -> None:
    """The encoders' share of a training step: query forward and backward, key forward (no loss: it is fp32 anyway)."""
    with precision.autocast():
        q, r, _ = encoder(x)
        with torch.no_grad():
            momentum_encoder(x)
    (q.float().sum() + r.float().sum()).backward()


def compile_encoders(
    model: DenseCL, batch: int, crop: int, channels_last: bool, precision: Precision, say, backend: str = "inductor"
) -> bool:
    """``torch.compile`` of both encoders in place (state-dict keys unchanged); False and eager where it fails.

    torch compiles at the first call, so one trial step of the encoders (the
    run's batch, crop, precision and layout) is run here: a missing compiler
    or an unsupported operator then costs one line, not the run. The trial's
    BN statistics and gradients are put back afterwards.
    """
    encoders = (model.encoder, model.momentum_encoder)
    saved = copy.deepcopy(model.state_dict())
    x = _trial_input(batch, crop, channels_last, next(model.parameters()).device, model.in_channels)
    try:
        for encoder in encoders:
            encoder.compile(backend=backend)
        _encoders_step(*encoders, x, precision)
        ok = True
    except Exception as e:  # any failure to compile means: train eagerly
        for encoder in encoders:
            encoder._compiled_call_impl = None  # what Module.compile set: back to the eager __call__
        message = str(e).strip().splitlines()[0] if str(e).strip() else ""
        say(f"densecl pretrain: --compile failed ({type(e).__name__}: {message[:200]}); training eagerly")
        ok = False
    model.load_state_dict(saved)
    model.zero_grad(set_to_none=True)
    return ok


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    else:
        torch.backends.cudnn.benchmark = True


def _init_backbone(model: DenseCL, source: str, say=print) -> None:
    """Starts both encoders' backbones from pre-trained weights (any format densecl reads); RGB weights on other
    inputs have their first convolution adapted (:mod:`densecl.weights.input_conv`), in one line."""
    from densecl.weights import load_backbone_weights
    from densecl.weights.input_conv import fit_input_channels

    weights = load_backbone_weights(source)  # checked to fit weights.arch exactly
    if weights.arch != model.arch:
        raise InputError(f"--init {source} holds a {weights.arch} backbone but the config says arch {model.arch}")
    state, note = fit_input_channels(weights.state_dict, model.in_channels, f"--init {source}")
    if note:
        say(f"densecl pretrain: {note}")
    for encoder in (model.encoder, model.momentum_encoder):
        encoder.backbone.load_state_dict(state, strict=True)


MODEL_KEYS = (
    "arch",
    "in_channels",
    "hidden_dim",
    "out_dim",
    "queue_len",
    "dense_queue_len",
)  # config fields that shape the weights


def _holds_run_files(out_dir: Path) -> bool:
    return any(
        (out_dir / name).exists() for name in (checkpoint.CHECKPOINT_NAME, MetricsLog.NAME, MetricsLog.TENSORBOARD)
    )


def _restore(
    state: checkpoint.TrainingState, model: DenseCL, optimizer, scaler, iters_per_epoch: int, cfg: PretrainConfig
) -> int:
    """Loads ``state`` into the run; one line (before anything is written) when it does not fit."""
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
    checkpoint.set_rng_state(state.rng)
    return int(state.step)


def stop_workers(loader: torch.utils.data.DataLoader) -> None:
    """Ends the persistent data workers of ``loader`` now, when an error (a data worker's too) ends the run.

    The workers ignore SIGTERM (:func:`_ignore_stop_signals`), so the terminate that multiprocessing sends its
    children at interpreter exit does not end them, and the exception's traceback keeps the loader's iterator
    (whose clean-up would) alive until then: the process would print its error and never exit.
    """
    iterator = getattr(loader, "_iterator", None)  # the persistent workers' iterator (torch keeps it there)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()


def _ignore_stop_signals(worker_id: int) -> None:
    """Data workers leave SIGINT/SIGTERM to the main process, which saves and then stops them.

    (Ctrl-C reaches the whole process group; a worker that died of it would
    crash the main process before it could save.)
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _install_stop_handlers():
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
