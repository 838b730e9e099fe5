"""Fine-tuning that survives a crash, and results that are never replaced silently."""

import json

import pytest
import torch

from densecl.cli import main


class Crash(Exception):
    """Stands in for a lost node: raised inside the training loop, nothing after it runs."""


def crash_at(monkeypatch, at: int):
    """Crashes after iteration ``at`` (from 0) has trained, before its checkpoint could be written."""
    from densecl.evaluation.finetune import LossWatch

    after = LossWatch.after

    def after_then_crash(self, loss, step):
        if step == at:
            raise Crash(step)
        return after(self, loss, step)

    monkeypatch.setattr(LossWatch, "after", after_then_crash)


def weights(path):
    return torch.load(path, weights_only=True)["model"]


SEG = ["--crop", "48", "--batch-size", "2", "--iters", "4", "--save-every", "2", "--workers", "0",
       "--output-stride", "16", "--log-every", "0"]  # fmt: skip
DET = ["--task", "box", "--iters", "3", "--save-every", "2", "--batch-size", "2", "--min-size", "64",
       "--max-size", "64", "--workers", "0", "--proposals", "50", "--rois-per-image", "32",
       "--detections-per-image", "10", "--norm", "bn", "--log-every", "0"]  # fmt: skip
# the VOC recipe's model on VOC-layout data, with Precise BN after training: a resumed run redraws its batches
C4 = [*DET, "--detector", "c4", "--precise-bn-iters", "2", "--norm-weight-decay", "0"]


@pytest.mark.parametrize(
    "protocol, module, data, settings, crash",
    [
        ("seg-finetune", "seg_finetune", "voc", SEG, 3),
        ("det", "det", "coco", DET, 2),
        pytest.param("det", "det", "voc", C4, 2, marks=pytest.mark.slow, id="det-c4-voc"),
    ],
)
@pytest.mark.slow
def test_a_crashed_fine_tuning_resumes_and_equals_an_uninterrupted_one(
    scenes, weights_file, tmp_path, capsys, monkeypatch, protocol, module, data, settings, crash
):
    def command(out, *extra):
        return ["eval", protocol, "--weights", str(weights_file), "--data", str(scenes[data]), *settings,
                "--out", str(tmp_path / out), *extra]  # fmt: skip

    assert main(command("straight.json")) == 0
    straight = json.loads((tmp_path / "straight.json").read_text())
    assert straight["resumed_from"] == {}

    with monkeypatch.context() as m:
        crash_at(m, crash)
        with pytest.raises(Crash):
            main(command("run.json"))
    ckpt = tmp_path / "run-checkpoints" / "seed0.pt"
    assert torch.load(ckpt, weights_only=True)["step"] == 2 and not (tmp_path / "run.json").exists()
    capsys.readouterr()

    assert main(command("run.json")) == 2  # a new run over the crashed one's checkpoint: one line, nothing touched
    assert capsys.readouterr().err.strip() == (
        f"densecl eval: error: {ckpt} holds a run at step 2; this command would start a new one there: "
        "continue it with --resume, give another --out, or pass --overwrite to move the old run aside"
    )
    assert main(command("run.json", "--resume")) == 0
    assert f"seed 0 resumes at iteration 2 from {ckpt}" in capsys.readouterr().out
    resumed = json.loads((tmp_path / "run.json").read_text())
    assert resumed["resumed_from"] == {"0": 2}
    assert resumed["metrics"] == straight["metrics"]
    a, b = weights(tmp_path / "straight-checkpoints" / "seed0.pt"), weights(ckpt)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    assert main(command("run.json", "--resume")) == 2  # done: the result is never replaced
    assert "the result (the evaluation it resumes is done)" in capsys.readouterr().err


def test_a_result_file_is_never_replaced_silently(scenes, tmp_path, capsys):
    out = tmp_path / "knn.json"
    argv = ["eval", "knn", "--weights", "random", "--arch", "resnet18", "--data", str(scenes["imagefolder"]),
            "--image-size", "0", "--workers", "0", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    first = out.read_bytes()
    capsys.readouterr()
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"densecl eval: error: the result {out} exists; give another --out, or pass --overwrite to move the old one "
        "aside"
    )
    assert out.read_bytes() == first
    assert main([*argv, "--overwrite"]) == 0
    assert f"moved {out} to {tmp_path / 'knn.old-1.json'}" in capsys.readouterr().out
    assert (tmp_path / "knn.old-1.json").read_bytes() == first and json.loads(out.read_text())["protocol"] == "knn"
