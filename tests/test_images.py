"""Tests of the one image-opening helper.

Run: ``.venv/bin/python -m pytest tests/test_images.py``
"""

import numpy as np
import pytest
from PIL import Image

from densecl.errors import InputError
from densecl.inputs.files.photo import open_rgb


def test_open_rgb_reads_any_mode_as_rgb(tmp_path) -> None:
    Image.new("CMYK", (5, 3), (0, 255, 0, 0)).save(tmp_path / "c.jpg", quality=100)
    Image.fromarray(np.full((3, 5), 70, np.uint8), mode="L").save(tmp_path / "g.png")
    cmyk, grey = open_rgb(tmp_path / "c.jpg"), open_rgb(tmp_path / "g.png")
    assert (cmyk.mode, cmyk.size, grey.mode, grey.size) == ("RGB", (5, 3), "RGB", (5, 3))
    assert np.asarray(grey)[1, 2].tolist() == [70, 70, 70]
    r, g, b = np.asarray(cmyk)[1, 2].tolist()  # full magenta ink: red and blue high, green low
    assert r > 200 and g < 60 and b > 200


def test_open_rgb_draft_decodes_a_jpeg_at_a_reduced_scale_no_smaller_than_asked(tmp_path) -> None:
    Image.new("RGB", (400, 200), (10, 200, 30)).save(tmp_path / "big.jpg")
    assert open_rgb(tmp_path / "big.jpg", draft_side=48).size == (100, 50)  # 1/4 scale: the shorter side stays >= 48
    assert open_rgb(tmp_path / "big.jpg").size == (400, 200)


@pytest.mark.parametrize("content", [b"not an image", None])
def test_an_unreadable_file_is_one_line_naming_it_and_what_to_do(tmp_path, content) -> None:
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError) as caught:
        open_rgb(path, what="background", fix="fix or remove it")
    message = str(caught.value)
    assert message.startswith(f"cannot read background {path} (") and message.endswith("); fix or remove it")
    assert "\n" not in message


def test_a_truncated_file_is_an_error_not_a_grey_half_image(tmp_path) -> None:
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cannot read image .*cut\.png"):
        open_rgb(tmp_path / "cut.png")
