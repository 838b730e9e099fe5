"""Dense correspondence (supplementary C): mutual matching on hand-built features, and ``densecl correspond``."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from densecl.cli import main
from densecl.data.geometry import cell_centres
from densecl.data.transforms import GeometricTwoViews
from densecl.matches import (
    Correspondence,
    Matches,
    ViewPair,
    augmented_pairs,
    correspond,
    match_stats,
    mutual_matches,
)
from densecl.models.backbones import build_backbone

# --------------------------------------------------------------------------- mutual matching


def test_a_permutation_of_unit_vectors_matches_everything_with_score_one():
    torch.manual_seed(0)
    f1 = torch.linalg.qr(torch.randn(8, 8)).Q[:, :6]  # 8 x 6, orthonormal columns
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    f2 = f1[:, perm]  # view-2 location j holds view-1 location perm[j]
    m = mutual_matches(f1, f2)
    assert m.idx1.tolist() == list(range(6))
    assert m.idx2.tolist() == perm.argsort().tolist()  # location i of view 1 sits at perm^-1(i) in view 2
    torch.testing.assert_close(m.score, torch.ones(6))


def test_a_one_way_match_is_dropped_and_the_score_is_the_pairs_cosine():
    # a -> c, but c -> b (0.96 > 0.8); b <-> c is mutual; d's best is b, but b's best is c
    a, b = (1.0, 0.0), (0.6, 0.8)
    c, d = (0.8, 0.6), (-1.0, 0.0)
    f1 = torch.tensor([a, b], dtype=torch.float64).T  # 2 x 2: C x S1
    f2 = torch.tensor([c, d], dtype=torch.float64).T  # 2 x 2: C x S2
    m = mutual_matches(f1, f2)
    assert m.idx1.tolist() == [1] and m.idx2.tolist() == [0]
    # "an averaged similarity": (b.c + c.b) / 2, which is just b.c
    torch.testing.assert_close(m.score, torch.tensor([0.96], dtype=torch.float64))


def test_different_numbers_of_locations_and_ties_go_to_the_lowest_index():
    e = torch.eye(3)
    f1 = e[:, [0, 1]]  # 3 x 2
    f2 = e[:, [2, 1, 1, 0]]  # 3 x 4: location 1 of view 1 appears twice in view 2
    m = mutual_matches(f1, f2)
    assert m.idx1.tolist() == [0, 1] and m.idx2.tolist() == [3, 1]


def _with_scores(scores, dtype=torch.float32):
    """View 1: e_0..e_{n-1}; view 2: s_i e_i + sqrt(1 - s_i^2) e_n, so the pair (i, i) has cosine s_i."""
    n = len(scores)
    f1 = torch.eye(n + 1, dtype=dtype)[:, :n]
    f2 = torch.zeros(n + 1, n, dtype=dtype)
    for i, s in enumerate(scores):
        f2[i, i], f2[n, i] = s, math.sqrt(1 - s * s)
    return f1, f2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_threshold_keeps_scores_at_or_above_it(dtype):
    m = mutual_matches(*_with_scores([0.5, 0.9, 0.95, 0.89], dtype))
    assert m.idx1.tolist() == [0, 1, 2, 3]  # all mutual
    kept = m.at_least(0.9)
    assert isinstance(kept, Matches)
    assert kept.idx1.tolist() == [1, 2] and kept.idx2.tolist() == [1, 2]
    assert len(m.at_least(0.99).score) == 0 and len(m.at_least(0.0).score) == 4


def test_bad_feature_shapes_are_refused():
    with pytest.raises(ValueError, match="same C"):
        mutual_matches(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="C x S1"):
        mutual_matches(torch.randn(2, 4, 3), torch.randn(4, 3))


def test_cell_centres_are_row_major_pixel_centres():
    c = cell_centres((2, 3), (64, 96))
    assert c.tolist() == [[16, 16], [48, 16], [80, 16], [16, 48], [48, 48], [80, 48]]


def test_match_stats_counts_and_histogram():
    full = Correspondence(mutual_matches(*_with_scores([0.5, 0.91, 0.95, 1.0])), (2, 2), (2, 2))
    empty = Correspondence(
        Matches(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0)), (2, 2), (2, 2)
    )
    s = match_stats([full, empty], threshold=0.9)
    assert s.pairs == 2 and s.locations == 4
    assert s.kept_per_pair == (3, 0) and s.mean_kept == 1.5 and s.mean_mutual == 2.0
    assert len(s.histogram_edges) == 11 and s.histogram_edges[0] == 0.0 and s.histogram_edges[-1] == 1.0
    assert s.histogram_counts == (0, 0, 0, 0, 0, 1, 0, 0, 0, 3)  # 1.0 falls in the last bin


# --------------------------------------------------------------------------- views and backbone


class _Images:
    def __init__(self, images):
        self.images = images
        self.origin = "test images"

    def __len__(self):
        return len(self.images)

    def load(self, i):
        return self.images[i]


def _noise_image(size=(96, 80), seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_view_pairs_depend_only_on_the_seed_and_skip_unreadable_images():
    source = _Images([_noise_image(seed=0), None, _noise_image(seed=2)])
    view = GeometricTwoViews(64, 0.2, photometric=False)
    state = torch.get_rng_state()
    a = list(augmented_pairs(source, 4, view, seed=3))
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is untouched
    b = list(augmented_pairs(source, 2, view, seed=3))
    c = list(augmented_pairs(source, 4, view, seed=4))
    assert len(a) == 4 and all(p.view1.shape == (3, 64, 64) for p in a)
    assert all(torch.equal(x.view1, y.view1) and torch.equal(x.view2, y.view2) for x, y in zip(a, b))
    assert not all(torch.equal(x.view1, y.view1) for x, y in zip(a, c))
    assert all(p.name in ("test images[0]", "test images[2]") for p in a)
    assert all(p.geometry is not None and p.geometry[0].size == 64 for p in a) and a[0].geometry == b[0].geometry


def test_truth_of_matches_from_the_views_geometry():
    from densecl.data.geometry import ViewGeometry
    from densecl.matches import Correspondence, Matches, truth

    x = torch.zeros(3, 64, 64)
    found = Correspondence(Matches(torch.tensor([0, 1, 3]), torch.tensor([0, 2, 2]), torch.ones(3)), (2, 2), (2, 2))
    same = ViewGeometry(0, 0, 64, 64, 64)
    assert truth(ViewPair(x, x, "x", (same, same)), found).tolist() == [1, 0, 0]
    # view 2 starts 32 px to the right: view 1's left column (cells 0, 2) is not in it; cell 1 is view 2's cell 0
    shifted = ViewGeometry(0, 32, 64, 64, 64)
    assert truth(ViewPair(x, x, "x", (same, shifted)), found).tolist() == [-1, 0, 1]  # cell 3 is view 2's cell 2
    right = Correspondence(Matches(torch.tensor([1, 3]), torch.tensor([0, 2]), torch.ones(2)), (2, 2), (2, 2))
    assert truth(ViewPair(x, x, "x", (same, shifted)), right).tolist() == [1, 1]
    assert truth(ViewPair(x, x, "x"), found) is None  # no geometry, no verdict


def test_identical_views_match_every_location_to_itself():
    torch.manual_seed(0)
    backbone = build_backbone("resnet18").eval()
    x = F.interpolate(torch.randn(1, 3, 24, 24), size=96, mode="bilinear")[0]  # smooth, 3 x 96 x 96
    (result,) = correspond(backbone, [ViewPair(x, x.clone(), "x")])
    assert result.grid1 == result.grid2 == (3, 3)
    assert result.matches.idx1.tolist() == list(range(9)) and result.matches.idx2.tolist() == list(range(9))
    torch.testing.assert_close(result.matches.score, torch.ones(9), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two random ResNet-18 backbones, a ResNet-34 one, an image and a folder of three images (one unreadable)."""
    root = tmp_path_factory.mktemp("correspond")
    paths = {}
    for name, arch, seed in (("a", "resnet18", 0), ("b", "resnet18", 1), ("r34", "resnet34", 0)):
        torch.manual_seed(seed)
        paths[name] = root / f"{name}.pth"
        torch.save(build_backbone(arch).state_dict(), paths[name])
    paths["image"] = root / "image.png"
    _noise_image((96, 80), 0).save(paths["image"])
    folder = root / "folder"
    (folder / "sub").mkdir(parents=True)
    _noise_image((80, 96), 1).save(folder / "one.jpg")
    _noise_image((72, 72), 2).save(folder / "sub" / "two.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    paths["folder"] = folder
    return paths


def _run(capsys, *argv):
    code = main(["correspond", *map(str, argv)])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def _picture_ok(path, rows):
    pytest.importorskip("matplotlib")
    with Image.open(path) as im:
        width, height = im.size
    assert width > 400 and height > 150 * rows


@pytest.mark.slow
def test_two_views_of_an_image_two_weights(files, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "pic" / "cat.png"
    text = _run(
        capsys,
        "--weights",
        files["a"],
        "--label",
        "DenseCL",
        "--weights",
        files["b"],
        "--label",
        "MoCo-v2",
        "--image",
        files["image"],
        "--crop",
        64,
        "--out",
        out,
    )
    _picture_ok(out, rows=2)
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["mode"] == "views" and report["augment"] == "crop-flip" and report["pairs"] == 1
    assert [w["label"] for w in report["weights"]] == ["DenseCL", "MoCo-v2"]
    for w in report["weights"]:
        assert w["arch"] == "resnet18" and w["format"] == "torchvision" and len(w["sha256"]) == 64
        assert w["locations_per_view"] == 4  # 64 px -> 2 x 2 C5 cells
        assert len(w["histogram"]["edges"]) == 11 and len(w["histogram"]["counts"]) == 10
        assert sum(w["histogram"]["counts"]) == w["mean_mutual_per_pair"] <= 4
        assert w["kept_per_pair"] == [w["mean_kept_per_pair"]]
    assert "DenseCL" in text and "mutual/pair" in text and ">=0.9/pair" in text and "wrote" in text


@pytest.mark.slow
def test_a_folder_gives_a_deterministic_report(files, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    args = [
        "--weights",
        files["a"],
        "--weights",
        "random",
        "--data",
        files["folder"],
        "--pairs",
        3,
        "--crop",
        64,
        "--augment",
        "moco-v2",
        "--threshold",
        0.5,
    ]
    text = _run(capsys, *args, "--out", tmp_path / "a.png")
    _run(capsys, *args, "--out", tmp_path / "b.png")
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    _picture_ok(tmp_path / "a.png", rows=2)
    assert a["mode"] == "data" and a["pairs"] == 3 and a["threshold"] == 0.5
    assert [w["label"] for w in a["weights"]] == ["a", "random resnet18"]
    for w in a["weights"]:
        assert len(w["kept_per_pair"]) == 3 and w["mean_kept_per_pair"] == pytest.approx(sum(w["kept_per_pair"]) / 3)
        assert sum(w["histogram"]["counts"]) == pytest.approx(3 * w["mean_mutual_per_pair"])
    assert a["weights"] == b["weights"] and a["first_pair"] == b["first_pair"]
    assert "broken.jpg" not in a["first_pair"]
    assert "0.9-1.0" in text  # the histogram table


def test_two_given_images_and_a_run_checkpoint_labelled_by_its_run(files, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    (tmp_path / "my_run").mkdir()
    (tmp_path / "my_run" / "checkpoint.pt").symlink_to(files["a"])
    out = tmp_path / "two.png"
    _run(
        capsys,
        "--weights",
        tmp_path / "my_run" / "checkpoint.pt",
        "--image",
        files["image"],
        "--image2",
        files["folder"] / "one.jpg",
        "--crop",
        64,
        "--out",
        out,
    )
    _picture_ok(out, rows=1)
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["mode"] == "images" and report["augment"] is None
    assert report["weights"][0]["label"] == "my_run"


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--weights", "{a}", "--weights", "{r34}"],
            "different architectures ('{a}' is resnet18, '{r34}' is resnet34)",
        ),
        (["--weights", "{a}", "--arch", "resnet34"], "holds resnet18 weights but --arch is resnet34"),
        (["--weights", "random"], "--weights random needs --arch"),
        (["--weights", "{a}", "--label", "x", "--label", "y"], "2 --label for 1 --weights"),
    ],
)
def test_refusals(files, tmp_path, capsys, argv, message):
    argv = [a.format(**files) for a in argv]
    code = main(["correspond", *argv, "--image", str(files["image"]), "--crop", "64", "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert code == 2 and message.format(**files) in err, err
    assert not (tmp_path / "x.png").exists()


def test_stats_tables_print_matches_per_pair_and_the_score_histogram():
    from densecl.matches import MatchStats, stats_tables

    stats = {
        "DenseCL": MatchStats(2, 4.0, 3.5, 1.0, 0.9, (1, 1), (0.0, 0.5, 1.0), (3, 4)),
        "random": MatchStats(2, 4.0, 2.0, 0.5, 0.9, (1, 0), (0.0, 0.5, 1.0), (4, 0)),
    }
    assert stats_tables(stats).splitlines() == [
        "| weights | pairs | locations | mutual/pair | >=0.9/pair |",
        "| ------- | ----- | --------- | ----------- | ---------- |",
        "| DenseCL | 2     | 4         | 3.50        | 1.00       |",
        "| random  | 2     | 4         | 2.00        | 0.50       |",
        "",
        "| mutual-match score | DenseCL | random |",
        "| ------------------ | ------- | ------ |",
        "| 0.0-0.5            | 3       | 4      |",
        "| 0.5-1.0            | 4       | 0      |",
    ]


def test_given_photos_are_normalised_and_shown_with_the_weights_own_statistics():
    import numpy as np
    from PIL import Image

    from densecl.inputs import InputSpec
    from densecl.matches import given_pair
    from densecl.plotting import to_display

    array = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    image = Image.fromarray(array)
    measured = InputSpec(3, True, None, (0.5, 0.4, 0.3), (0.25, 0.2, 0.1))  # photos with measured, not ImageNet's
    pair = given_pair(image, image, 40, "a", measured)  # 40 px: the resize keeps the pixels
    expected = (
        torch.from_numpy(array).permute(2, 0, 1).float() / 255 - torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1)
    ) / (torch.tensor([0.25, 0.2, 0.1]).view(3, 1, 1))
    torch.testing.assert_close(pair.view1, expected)
    np.testing.assert_allclose(to_display(pair.view1, measured), array / 255, atol=1e-6)
