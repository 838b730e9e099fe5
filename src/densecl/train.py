"""``densecl pretrain``: a straight run of setup steps, then the epoch loop.

densecl pretrain --config demo_cpu                       # CPU, embedded scenes
densecl pretrain --config densecl_r50_coco_800ep --data /data/coco/train2017
torchrun --nproc_per_node 8 -m densecl pretrain --config densecl_r50_imagenet_200ep --data /data/imagenet/train
densecl pretrain --resume runs/demo/checkpoint.pt        # continue exactly where it stopped
torchrun --max-restarts 3 --nproc_per_node 8 -m densecl pretrain --config ... --resume auto   # survives crashes
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from densecl import checkpoint, distributed, precision, run_dir
from densecl.config import PretrainConfig, auto_queue_len
from densecl.data import gpu as gpu_data
from densecl.data.sampler import EpochSampler
from densecl.data.sources import TwoViewDataset
from densecl.data.transforms import GeometricTwoViews
from densecl.devices import resolve_device
from densecl.engine import (
    LoopState,
    ignore_stop_signals,
    install_stop_handlers,
    make_sgd,
    progress,
    stop_workers,
    train_one_epoch,
)
from densecl.errors import InputError
from densecl.inputs import InputSpec
from densecl.inputs.resolve import resolve_inputs
from densecl.inputs.sources import ImageFiles, SceneImages, image_source
from densecl.models.backbones import check_grid
from densecl.models.densecl import DenseCL
from densecl.seeding import seed_everything
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
        run_dir.start_mode(ckpt_path, checkpoint.load(ckpt_path).step, False, False, "--output-dir")
    device = resolve_device(cfg.device)
    info = distributed.setup(device.type, cfg.dist_timeout)
    try:
        if device.type == "cuda":
            device = torch.device("cuda", info.local_rank)
        cfg.validate(info.world_size)
        grid = check_grid(cfg.arch, cfg.crop_size)  # C5 side; a timm name timm does not know stops here too
        say = print if info.is_main else _quiet
        checkpoint.check_ranks_agree(resume, ckpt_path)
        seed_everything(cfg.seed, cfg.deterministic)  # the same on every rank: identical initial weights and queues

        # data: a bad path fails before any model is built
        source = image_source(cfg.data, cfg.scenes_length, cfg.scenes_size, cfg.seed)
        cfg, inputs, input_line = resolve_inputs(cfg, source)  # channels, bands, mean/std: numbers from here on
        cfg = cfg.with_queues_for(len(source))  # "auto" queue lengths: numbers from here on, printed and stored
        per_rank_batch = cfg.batch_size // info.world_size
        sampler, batches = _batches(cfg, source, inputs, per_rank_batch, info, device, grid)
        iters_per_epoch = sampler.batches_per_epoch
        cfg.check_schedule(iters_per_epoch)

        # model, precision, optimizer; a resumed run's state
        model = _model(cfg, device, init=cfg.init if resume is None else None, say=say)
        run_precision = precision.for_run(
            cfg.precision, device, model, per_rank_batch, cfg.crop_size, cfg.channels_last, precision_cache, say,
            info.is_main,
        )  # fmt: skip
        optimizer = make_sgd(model.encoder.parameters(), cfg.scaled_lr, cfg.sgd_momentum, cfg.weight_decay, device.type)
        scaler = torch.amp.GradScaler(device.type) if run_precision.dtype == torch.float16 else None
        step = checkpoint.restore(resume, model, optimizer, scaler, iters_per_epoch, cfg) if resume else 0
        if cfg.compile:
            precision.compile_encoders(model, per_rank_batch, cfg.crop_size, cfg.channels_last, run_precision, say)
        ddp_model = distributed.wrap_ddp(model, device)

        if info.is_main and resume is None:
            _claim(out_dir, overwrite, say)
        distributed.barrier()
        say(f"densecl pretrain: {'resuming at iteration ' + str(step) if resume else 'new run'} in {out_dir}")
        say(cfg.to_yaml().rstrip())
        say(input_line)
        say(_summary(cfg, source, per_rank_batch, iters_per_epoch, info.world_size, device, run_precision, grid, model))
        if warning := queue_warning(cfg, len(source), iters_per_epoch * cfg.batch_size):
            say(f"densecl pretrain: warning: {warning}", file=sys.stderr)

        # the epochs
        loop = LoopState(step, cfg.epochs * iters_per_epoch, install_stop_handlers(), saved_step=step)
        save = _saver(cfg, model, optimizer, scaler, loop, iters_per_epoch, info, ckpt_path)
        t0 = time.time()
        with MetricsLog(out_dir, info.is_main, step if resume else None) as log, progress(loop, info.is_main) as bar:
            for epoch in range(step // iters_per_epoch, cfg.epochs):
                if cfg.max_iters is not None and loop.step >= cfg.max_iters:
                    break
                sampler.epoch, sampler.start_batch = epoch, loop.step - epoch * iters_per_epoch
                model.train()
                args = (ddp_model, batches, optimizer, scaler, run_precision, cfg, epoch, loop, log, save, device, bar)
                try:
                    if train_one_epoch(*args):
                        break
                except BaseException:
                    stop_workers(batches)  # else the process hangs at exit: see stop_workers
                    raise
                save()

        if loop.stop_requested():
            say(f"densecl pretrain: stopped by signal at iteration {loop.step}; resume with --resume {ckpt_path}")
        if isinstance(batches, gpu_data.DeviceBatches) and (batches.cpu_decoded or batches.remade):
            say(
                f"densecl pretrain: data backend gpu: {batches.cpu_decoded} images were not plain JPEGs and were "
                f"decoded on the CPU by the data workers; {batches.remade} JPEGs the GPU could not decode were "
                "remade by the CPU path"
            )
        say(f"densecl pretrain: {loop.step} iterations in {time.time() - t0:.0f} s; checkpoint {ckpt_path}, "
            f"metrics {log.path}")  # fmt: skip
        return ckpt_path
    finally:
        distributed.teardown()


def _batches(
    cfg: PretrainConfig,
    source: ImageFiles | SceneImages,
    inputs: InputSpec,
    per_rank_batch: int,
    info,
    device,
    grid: int,
):
    """The run's sampler and its batches of ``(im_q, im_k, match, skipped)``, from data workers (and the GPU)."""
    sampler = EpochSampler(len(source), per_rank_batch, info.rank, info.world_size, cfg.seed)
    if sampler.batches_per_epoch == 0:
        raise InputError(f"{source.origin} has {len(source)} images, fewer than one global batch of {cfg.batch_size}")
    check_data_backend(cfg.data_backend, device)
    side = cfg.num_grid or grid
    two_views = GeometricTwoViews(
        cfg.crop_size,
        cfg.min_scale,
        (side, side) if cfg.dense_matching != "features" else None,  # the geometric match, for every other rule
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
        worker_init_fn=ignore_stop_signals,
        collate_fn=gpu_data.collate if on_gpu else None,
        # its own generator: an iterator draws its workers' base seed when an epoch starts, and from the global
        # generator that would move the key shuffles after a resume mid-epoch (the views have their own seeds)
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    if not on_gpu:
        return sampler, loader
    # the gpu backend decodes and augments in this process, on the device; the CPU path remakes what it cannot decode
    return sampler, gpu_data.DeviceBatches(loader, device, cfg.crop_size, TwoViewDataset(source, two_views))


def _model(cfg: PretrainConfig, device: torch.device, init: str | None, say) -> DenseCL:
    """DenseCL as the config describes it, on ``device``; both backbones from ``init``'s weights if given."""
    model = DenseCL(
        cfg.arch, cfg.hidden_dim, cfg.out_dim, cfg.queue_len, cfg.momentum, cfg.temperature, cfg.loss_lambda,
        cfg.num_grid, dense_queue_len=cfg.dense_queue_len, bn_group_size=cfg.bn_group_size, in_channels=cfg.in_channels,
    )  # fmt: skip
    if init:
        _init_backbone(model, init, say)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def _saver(
    cfg, model, optimizer, scaler, loop: LoopState, iters_per_epoch: int, info, path: Path
) -> Callable[[], None]:
    """``save()``: the run's state to ``path`` on rank 0, once per step (and a numbered copy every ``keep_every``)."""

    def save() -> None:
        if loop.saved_step == loop.step:  # a --save-every step that ends an epoch, or a stop right after a save
            return
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
            checkpoint.save(path, state)
            if cfg.keep_every and loop.step % cfg.keep_every == 0:
                checkpoint.keep_numbered(path, loop.step)
        distributed.barrier()
        loop.saved_step = loop.step

    return save


def _claim(out_dir: Path, overwrite: bool, say) -> None:
    """A new run's folder holds nothing of another run: an older one (``--overwrite``), or logs of one that never
    saved, is moved aside, never mixed in."""
    held = any((out_dir / n).exists() for n in (checkpoint.CHECKPOINT_NAME, MetricsLog.NAME, MetricsLog.TENSORBOARD))
    if (overwrite or held) and (moved := run_dir.move_aside(out_dir)):
        say(f"densecl pretrain: moved the earlier run in {out_dir} to {moved}")


def _summary(
    cfg, source, per_rank_batch: int, iters_per_epoch: int, world_size: int, device, run_precision, side: int, model
) -> str:
    groups = (
        f"each process's {per_rank_batch} images"
        if cfg.bn_group_size is None or cfg.bn_group_size == per_rank_batch
        else f"{per_rank_batch // cfg.bn_group_size} groups of {cfg.bn_group_size} per process"
    )
    norms = f"batch norm over {groups}"
    if not model.shuffle_keys:  # ConvNeXt's LayerNorm: each image's features depend on that image alone
        unused = f"; --bn-group-size {cfg.bn_group_size} has nothing to group" if cfg.bn_group_size else ""
        norms = f"no batch norm in {cfg.arch}, so keys need no shuffle and are not shuffled{unused}"
    if cfg.loss_lambda == 0:
        dense = "MoCo-v2: no dense head"
    else:
        rule = cfg.dense_matching + (
            f" until iteration {cfg.dense_matching_switch}" if cfg.dense_matching_switch else ""
        )
        dense = f"dense grid {cfg.num_grid or side}, positives {rule}"
    return (
        f"data: {source.origin}, {len(source)} images, {iters_per_epoch} iterations/epoch, "
        f"{cfg.epochs * iters_per_epoch} in all | batch {cfg.batch_size} = {world_size} x {per_rank_batch}, "
        f"{norms} | lr {cfg.lr} for 256 -> {cfg.scaled_lr:g} | "
        f"{device.type} {run_precision.name}{' channels_last' if cfg.channels_last else ''} | "
        f"C5 grid {side}x{side}, {dense}"
    )


def queue_warning(cfg: PretrainConfig, n_images: int, keys_per_epoch: int) -> str | None:
    """One line when a queue is longer than the data set: its negatives then include earlier keys of each query's
    own image (one per epoch the queue spans), more alike as training settles; None when both queues are shorter."""
    queues = {"queue_len": cfg.queue_len}
    if cfg.loss_lambda > 0:  # MoCo-v2 has no dense queue
        queues["dense_queue_len"] = cfg.dense_queue_len or cfg.queue_len
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


def check_data_backend(backend: str, device: torch.device) -> None:
    """Raises :class:`InputError` for ``--data-backend gpu`` on a run without a CUDA device."""
    if backend == "gpu" and device.type != "cuda":
        raise InputError(
            f"--data-backend gpu decodes and augments on a CUDA GPU, but this run is on the {device.type}; "
            "use --data-backend cpu"
        )


def _init_backbone(model: DenseCL, source: str, say) -> None:
    """Starts both encoders' backbones from pre-trained weights (any format densecl reads); RGB weights on other
    inputs have their first convolution adapted (:mod:`densecl.weights.input_conv`), in one line."""
    from densecl.weights import load_backbone_weights
    from densecl.weights.input_conv import fit_input_channels

    weights = load_backbone_weights(source, model.arch)  # checked to fit weights.arch exactly
    if weights.arch != model.arch:
        raise InputError(f"--init {source} holds a {weights.arch} backbone but the config says arch {model.arch}")
    state, note = fit_input_channels(weights.state_dict, model.in_channels, f"--init {source}", weights.stem)
    if note:
        say(f"densecl pretrain: {note}")
    for encoder in (model.encoder, model.momentum_encoder):
        encoder.backbone.load_library_state_dict(state)


def _quiet(*args, **kwargs) -> None:
    """What ranks other than 0 print: nothing."""
