"""Failures reach the user as one line and an exit status, never as a traceback or silence."""

import pytest
import torch
from torch import nn

import densecl.cli
from densecl.cli import build_parser, main
from densecl.evaluation import det, det_config, seg_finetune


class NaNLoss(nn.Module):
    """A model whose every output is NaN, with one trainable parameter for the optimizer."""

    def __init__(self, backbone=None, num_classes: int = 1, dropout: float = 0.0) -> None:  # FCN's signature
        super().__init__()
        self.k = num_classes
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x, targets=None):
        if targets is not None:  # a detector in training: a dict of losses
            return {"loss_classifier": self.w * float("nan")}
        return torch.zeros(x.shape[0], self.k, *x.shape[-2:]) + self.w * float("nan")  # B x K x H x W logits


def _one_line_error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def test_seg_finetune_nan_loss_is_one_line_and_status_1(scenes, weights_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(seg_finetune, "FCN", NaNLoss)
    code, err = _one_line_error(
        capsys,
        [
            "eval",
            "seg-finetune",
            "--weights",
            str(weights_file),
            "--data",
            str(scenes["voc"]),
            "--crop",
            "32",
            "--batch-size",
            "2",
            "--iters",
            "2",
            "--workers",
            "0",
            "--out",
            str(tmp_path / "x.json"),
        ],
    )
    assert code == 1
    assert err == "densecl eval: error: seg-finetune: loss is nan at iteration 0; lower --lr"
    assert not (tmp_path / "x.json").exists()


def test_det_nan_loss_is_one_line_and_status_1(scenes, weights_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(det, "build_detector", lambda *args: NaNLoss())
    code, err = _one_line_error(
        capsys,
        [
            "eval",
            "det",
            "--weights",
            str(weights_file),
            "--data",
            str(scenes["coco"]),
            "--iters",
            "2",
            "--batch-size",
            "2",
            "--min-size",
            "64",
            "--max-size",
            "64",
            "--workers",
            "0",
            "--out",
            str(tmp_path / "x.json"),
        ],
    )
    assert code == 1
    assert err == "densecl eval: error: det: loss is nan at iteration 0; lower --lr or raise --warmup-iters"


def test_a_missing_subcommand_module_fails_loudly(monkeypatch):
    monkeypatch.setattr(densecl.cli, "COMMANDS", ("plot", "vanished"))
    with pytest.raises(ModuleNotFoundError, match="densecl.cli.vanished"):
        build_parser()


def test_det_on_a_two_core_machine_starts_one_data_worker(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert det_config.DetConfig(data="coco").workers == 1
    args = build_parser(only="eval").parse_args(["eval", "det", "--weights", "w", "--data", "coco"])
    assert args.workers == 1
