"""How long the start of a run takes to check every image's header (densecl.inputs.stats.inspect).

    python benchmarks/header_check.py --files 20000 --kinds tiff4,jpeg8
    python benchmarks/header_check.py --data /path/to/images          # your folder as it is

Without ``--data`` it writes ``--files`` small images of each kind into a temporary folder (``tiff4``: 4-band
16-bit GeoTIFFs with a nodata value, ``jpeg8``: 8-bit RGB JPEGs; a header costs the same for any image size)
and times the check of that folder, file listing included, twice: the first pass reads from disk, the second
from the page cache, as a rerun does. Prints files per second and the seconds for the whole folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def write(kind: str, folder: Path, files: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    if kind == "tiff4":
        import tifffile

        tags = [(42113, "s", 0, "0", True)]  # GDAL_NODATA
        for i in range(files):
            array = rng.integers(0, 65535, (4, 32, 32), dtype=np.uint16)
            tifffile.imwrite(folder / f"{i:06d}.tif", array, photometric="minisblack", extratags=tags)
    elif kind == "jpeg8":
        for i in range(files):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:06d}.jpg")
    else:
        raise SystemExit(f"unknown kind {kind!r}: tiff4 or jpeg8")


def check(folder: str) -> tuple[int, float]:
    from densecl.inputs.sources import image_source
    from densecl.inputs.stats import inspect

    t0 = time.perf_counter()
    source = image_source(folder)
    inspect(source)
    return len(source), time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="a folder of your images (default: write --files of each kind)")
    p.add_argument("--files", type=int, default=20000)
    p.add_argument("--kinds", default="tiff4,jpeg8")
    args = p.parse_args()
    folders = {"your data": args.data} if args.data else {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in [] if args.data else args.kinds.split(","):
            write(kind, Path(tmp) / kind, args.files)
            folders[kind] = str(Path(tmp) / kind)
        for name, folder in folders.items():
            for run in ("first pass", "again"):
                n, seconds = check(folder)
                print(f"{name:>10} {run:>10}: {n} files in {seconds:.2f} s, {n / seconds:,.0f} files/s")


if __name__ == "__main__":
    main()
