"""The fine-tuned detector file: written next to the result, never over a file, usable with torchvision alone.

The torchvision construction and the inference loop are the ones docs/evaluate.md shows: the test runs that
snippet as it stands, so the page and the file cannot drift apart.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
import torch

from densecl.cli import main
from densecl.errors import InputError
from densecl.evaluation.det_config import DetConfig
from densecl.evaluation.det_file import load_detector, save_detector
from densecl.evaluation.det_model import build_detector
from densecl.models.backbones import build_backbone
from densecl.scenes import CLASSES

TINY = ["--iters", "1", "--batch-size", "2", "--min-size", "64", "--max-size", "64", "--workers", "0",
        "--proposals", "50", "--rois-per-image", "32", "--detections-per-image", "10", "--norm", "bn",
        "--warmup-iters", "1", "--lr", "0.01", "--log-every", "0"]  # fmt: skip

pytestmark = pytest.mark.slow  # detectors built and trained: seconds each


def documented_snippet() -> str:
    """The Python block of docs/evaluate.md that loads a detector file with torchvision alone."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "evaluate.md").read_text()
    start = text.index("```python", text.index("### The fine-tuned detector")) + len("```python")
    return text[start : text.index("```", start)]


def run_documented(detector: Path, images: Path) -> tuple[dict, str]:
    """Runs the documented snippet on ``detector`` and a folder of images: its variables and what it printed."""
    code = documented_snippet()
    code = re.sub(r'^DETECTOR = ".*"$', f"DETECTOR = {str(detector)!r}", code, count=1, flags=re.M)
    code = re.sub(r'^IMAGES = ".*"$', f"IMAGES = {str(images)!r}", code, count=1, flags=re.M)
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "docs/evaluate.md", "exec"), namespace)
    return namespace, printed.getvalue()


def same_detections(a: torch.nn.Module, b: torch.nn.Module, image: torch.Tensor) -> bool:
    with torch.no_grad():
        x, y = a.eval()([image])[0], b.eval()([image])[0]
    return x.keys() == y.keys() and all(torch.allclose(x[k], y[k], atol=1e-5) for k in x)


def test_eval_det_writes_the_detector_next_to_the_result_and_torchvision_loads_it_strictly(
    scenes, weights_file, tmp_path, capsys
):
    out = tmp_path / "det.json"
    kept = tmp_path / "det.detector.pt"
    kept.write_text("an earlier detector")
    argv = ["eval", "det", "--weights", str(weights_file), "--data", str(scenes["coco"]), *TINY, "--out", str(out)]
    assert main(argv) == 2  # the file is there: one line, before any model
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--save-detector {kept} exists" in err and "--overwrite" in err
    assert main([*argv, "--overwrite"]) == 0
    assert f"det: the fine-tuned detector (seed 0) is in {kept}" in capsys.readouterr().out
    assert (tmp_path / "det.detector.old-1.pt").read_text() == "an earlier detector"  # moved aside, not lost

    saved = torch.load(kept, weights_only=True)
    assert (saved["format"], saved["detector"], saved["task"], saved["arch"]) == (
        "densecl-detector",
        "fpn",
        "box",
        "resnet18",
    )
    assert saved["classes"] == list(CLASSES[1:]) and (saved["min_size"], saved["max_size"]) == ((64,), 64)
    assert (saved["image_mean"], saved["image_std"]) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert saved["fpn_in_channels"] == [64, 128, 256, 512]

    namespace, printed = run_documented(kept, scenes["coco"] / "val")  # load_state_dict is strict there
    plain, (rebuilt, classes) = namespace["model"], load_detector(kept)
    assert type(plain).__name__ == "FasterRCNN" and classes == CLASSES[1:]
    state, plain_state = rebuilt.state_dict(), plain.state_dict()
    assert state.keys() == plain_state.keys() and all(torch.equal(state[k], plain_state[k]) for k in state)
    assert same_detections(plain, rebuilt, torch.rand(3, 64, 64))
    assert all(len(line.split()) >= 3 for line in printed.splitlines())  # name, class, score, box per detection


@pytest.mark.parametrize("norm, task", [("frozen", "box"), ("bn", "mask"), ("frozen", "mask")])
def test_every_fpn_variant_loads_strictly_into_the_documented_torchvision_model(tmp_path, norm, task):
    torch.manual_seed(0)
    config = DetConfig(data="-", norm=norm, task=task, min_size=(64,), max_size=64)
    model = build_detector(build_backbone("resnet18"), "resnet18", 3, config).eval()
    path = tmp_path / "d.pt"
    save_detector(path, model, ("a", "b", "c"), seed=0, iters=0)
    (tmp_path / "images").mkdir()
    namespace, _ = run_documented(path, tmp_path / "images")
    assert type(namespace["model"]).__name__ == ("MaskRCNN" if task == "mask" else "FasterRCNN")
    assert same_detections(namespace["model"], model, torch.rand(3, 64, 64))


def test_a_c4_detector_is_rebuilt_by_load_detector(tmp_path):
    torch.manual_seed(0)
    config = DetConfig(data="-", detector="c4", min_size=(64,), max_size=64, proposals=50)
    model = build_detector(build_backbone("resnet18"), "resnet18", 2, config).eval()
    save_detector(tmp_path / "c4.pt", model, ("cat", "hat"), seed=3, iters=24000)
    rebuilt, classes = load_detector(tmp_path / "c4.pt")
    assert classes == ("cat", "hat") and rebuilt.detector_spec == model.detector_spec
    assert same_detections(rebuilt, model, torch.rand(3, 64, 64))
    (tmp_path / "bad.pt").write_text("not a detector")
    with pytest.raises(InputError, match="cannot read detector file"):
        load_detector(tmp_path / "bad.pt")
