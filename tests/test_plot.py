"""``densecl plot`` and the metrics reader behind it, on hand-written metrics.jsonl files."""

import json

import pytest
from PIL import Image

from densecl.cli import main
from densecl.errors import InputError
from densecl.plotting import read_metrics, run_labels


def _step(step, loss, lr=0.03):
    return {
        "step": step,
        "epoch": step // 20,
        "lr": lr,
        "lambda": 0.5,
        "pairs_per_s": 10.0,
        "loss": loss,
        "loss_global": loss + 0.1,
        "loss_dense": loss - 0.1,
        "data_time": 0.01,
        "iter_time": 0.1,
    }


def _write_run(run_dir, records, tail=""):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return run_dir


def _run_records(n=8, offset=0.0):
    records = []
    for step in range(10, 10 * n + 1, 10):
        records.append(_step(step, 9.0 - step / 40 + offset, lr=0.03 * (1 - step / 100)))
        if step % 20 == 0:
            records.append({"epoch": step // 20, "step": step, "skipped_images": 0})  # per-epoch line, no loss
    return records


def test_read_metrics_keeps_step_lines_in_order_and_the_resumed_value_of_a_step(tmp_path, capsys):
    records = _run_records(4) + [_step(30, 1.5), _step(40, 1.25)]  # resumed from step 20: 30 and 40 logged again
    _write_run(tmp_path / "run", records, tail='{"step": 50, "lo')  # killed while writing
    got = read_metrics(tmp_path / "run")
    assert [r["step"] for r in got] == [10, 20, 30, 40]
    assert [r["loss"] for r in got][2:] == [1.5, 1.25]
    assert "truncated last line 9" in capsys.readouterr().err
    assert read_metrics(tmp_path / "run" / "metrics.jsonl") == got  # the file itself works too


def test_read_metrics_refusals(tmp_path):
    with pytest.raises(InputError, match="missing/metrics.jsonl does not exist"):
        read_metrics(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text("\n")
    with pytest.raises(InputError, match="empty/metrics.jsonl is empty"):
        read_metrics(tmp_path / "empty")
    _write_run(tmp_path / "epochs", [{"epoch": 0, "step": 10, "skipped_images": 0}])
    with pytest.raises(InputError, match="no step lines with a loss"):
        read_metrics(tmp_path / "epochs")
    _write_run(tmp_path / "bad", [])
    (tmp_path / "bad" / "metrics.jsonl").write_text("oops\n" + json.dumps(_step(10, 1.0)) + "\n")
    with pytest.raises(InputError, match="line 1, is not JSON"):
        read_metrics(tmp_path / "bad")


def test_labels_are_dir_names_unless_they_repeat(tmp_path):
    assert run_labels([tmp_path / "densecl", tmp_path / "mocov2"]) == ["densecl", "mocov2"]
    a, b = tmp_path / "x" / "run", tmp_path / "y" / "run"
    assert run_labels([a, b]) == [str(a), str(b)]


@pytest.mark.slow
def test_plot_one_run_to_its_default_file_and_two_overlaid(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    dense = _write_run(tmp_path / "densecl", _run_records())
    moco = _write_run(tmp_path / "mocov2", _run_records(offset=0.5))
    assert main(["plot", str(dense)]) == 0
    assert "densecl: 8 points, steps 10..80" in capsys.readouterr().out
    with Image.open(dense / "curves.png") as im:
        assert im.size[0] > 400 and im.size[1] > 300
    out = tmp_path / "out" / "both.png"
    assert main(["plot", str(dense), str(moco), "--out", str(out)]) == 0
    assert out.is_file() and out.stat().st_size > 10_000


def test_plot_names_the_missing_file(tmp_path, capsys):
    good = _write_run(tmp_path / "good", _run_records())
    assert main(["plot", str(good), str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "densecl plot: error:" in err and str(tmp_path / "nope" / "metrics.jsonl") in err
    assert not (good / "curves.png").exists()  # nothing drawn when one run is missing


def test_match_arcs_end_at_the_cells_and_bend_by_half_the_bow():
    import numpy as np

    from densecl.plotting import match_arcs

    start = np.array([[10.0, 20.0], [0.0, 0.0]])
    end = np.array([[110.0, 20.0], [40.0, 40.0]])
    arcs = match_arcs(start, end, np.array([30.0, -8.0]), points=5)  # t = 0, 1/4, 1/2, 3/4, 1
    assert arcs.shape == (2, 5, 2)
    np.testing.assert_allclose(arcs[:, 0], start)
    np.testing.assert_allclose(arcs[:, -1], end)
    # halfway: the chord's midpoint moved by bow / 2 in y, x unchanged
    np.testing.assert_allclose(arcs[0, 2], [60.0, 20.0 + 15.0])
    np.testing.assert_allclose(arcs[1, 2], [20.0, 20.0 - 4.0])
    # t = 1/4 on the first arc: x = 10 + 100/4, y = 20 + 2 * (3/4) * (1/4) * 30
    np.testing.assert_allclose(arcs[0, 1], [35.0, 20.0 + 11.25])


def test_the_curves_include_both_accuracies_and_a_run_without_them_leaves_their_panels_empty(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from densecl import plotting

    figures = []
    monkeypatch.setattr(plotting, "_save", lambda fig, path: figures.append(fig) or path)
    with_acc = [{**_step(s, 5.0), "acc_global": 10.0 + s, "acc_dense": 90.0} for s in (10, 20, 30)]
    plotting.plot_curves([("new", with_acc), ("old", [_step(s, 5.0) for s in (10, 20, 30)])], tmp_path / "c.png")
    axes = {ax.get_title(): ax for ax in figures[0].axes}
    assert set(plotting.CURVES.values()) <= set(axes)
    global_lines = axes[plotting.CURVES["acc_global"]].get_lines()
    assert [line.get_label() for line in global_lines] == ["new"]  # the run logged before accuracies: no line
    assert list(global_lines[0].get_ydata()) == [20.0, 30.0, 40.0]
    assert [line.get_label() for line in axes[plotting.CURVES["loss"]].get_lines()] == ["new", "old"]
