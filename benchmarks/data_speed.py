"""Throughput of the pre-training input pipeline in one process (what one data worker delivers).

    python benchmarks/data_speed.py --data scenes --scenes-size 128 --crop 96
    python benchmarks/data_speed.py --data /path/to/images --crop 224
    python benchmarks/data_speed.py --compare jpeg8,tiff16,tiff4,png16,dicom --size 512 --crop 224

``--compare`` writes the same random-textured images (``--files`` of them,
``--size`` pixels a side) in each kind into a temporary folder, then times each
folder exactly as ``densecl pretrain`` reads it (its input resolved: bands,
statistics, the checks): ``jpeg8`` an 8-bit RGB JPEG (the photo path, with
draft decoding), ``tiff16`` a 16-bit RGB TIFF, ``tiff4`` a 4-band 16-bit TIFF
(deflate-compressed with ``--compress``), ``png16`` a 16-bit grayscale PNG,
``dicom`` a 16-bit DICOM. Kinds whose package is missing are left out with a
line. Rounds alternate the kinds, so a slow phase of a shared machine hits
all of them; the best round is reported.

Compare images/s with the training step's pairs/s (benchmarks/step_speed.py):
one worker keeps up when it is the larger number.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from densecl.config import PretrainConfig
from densecl.data.sources import TwoViewDataset
from densecl.data.transforms import GeometricTwoViews
from densecl.inputs.resolve import resolve_inputs
from densecl.inputs.sources import image_source

KINDS = ("jpeg8", "tiff16", "tiff4", "png16", "dicom")


def write_kind(kind: str, folder: Path, files: int, size: int, compress: bool) -> bool:
    """Writes ``files`` images of one kind; False (and a line) when its package is missing."""
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(files):
        # smooth texture plus noise: compresses like a photo, not like noise or a flat field
        base = rng.normal(0, 1, (4, size // 16 + 1, size // 16 + 1))
        smooth = torch.nn.functional.interpolate(torch.from_numpy(base)[None], size=(size, size), mode="bicubic")[0]
        values = (smooth.numpy() * 8000 + 30000 + rng.normal(0, 300, (4, size, size))).clip(0, 65535)
        name = folder / f"{i:04d}"
        try:
            if kind == "jpeg8":
                rgb = (values[:3] / 257).round().astype(np.uint8)
                Image.fromarray(np.moveaxis(rgb, 0, -1)).save(f"{name}.jpg", quality=90)
            elif kind in ("tiff16", "tiff4"):
                import tifffile

                bands = values[:3] if kind == "tiff16" else values
                tifffile.imwrite(
                    f"{name}.tif",
                    bands.astype(np.uint16),
                    photometric="minisblack",
                    compression="zlib" if compress else None,
                )
            elif kind == "png16":
                Image.fromarray(values[0].astype(np.uint16)).save(f"{name}.png")
            else:
                write_dicom(Path(f"{name}.dcm"), values[0].astype(np.uint16))
        except ImportError as e:
            print(f"{kind}: left out ({e.name} is not installed)")
            return False
    return True


def write_dicom(path: Path, array: np.ndarray) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = array.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = array.tobytes()
    ds.save_as(path, enforce_file_format=True)


def pipeline(data: str, crop: int, scenes_size: int = 128) -> tuple[TwoViewDataset, object, str]:
    """The data set train.py builds for ``data`` (input resolved as at the start of a run)."""
    cfg = dataclasses.replace(
        PretrainConfig(), data=data, crop_size=crop, scenes_length=10_000, scenes_size=scenes_size
    )
    source = image_source(cfg.data, cfg.scenes_length, cfg.scenes_size, cfg.seed)
    cfg, spec, line = resolve_inputs(cfg, source)
    return TwoViewDataset(source, GeometricTwoViews(crop, cfg.min_scale, inputs=spec, jitter=cfg.jitter)), source, line


def time_one(dataset: TwoViewDataset, source, n: int) -> tuple[float, float]:
    """Seconds per image for the two views (reading included) and for reading alone."""
    t = time.perf_counter()
    for i in range(n):
        dataset[(i % len(source), i)]
    views = (time.perf_counter() - t) / n
    t = time.perf_counter()
    for i in range(n):
        source.load(i % len(source))
    return views, (time.perf_counter() - t) / n


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="scenes")
    p.add_argument("--scenes-size", type=int, default=128)
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--n", type=int, default=200, help="images timed per round")
    p.add_argument("--compare", default="", help=f"comma-separated kinds to write and compare: {','.join(KINDS)}")
    p.add_argument("--size", type=int, default=512, help="--compare: image side in pixels")
    p.add_argument("--files", type=int, default=32, help="--compare: images written per kind")
    p.add_argument("--rounds", type=int, default=3, help="--compare: rounds over all kinds; the best is reported")
    p.add_argument("--compress", action="store_true", help="--compare: deflate-compressed TIFFs")
    args = p.parse_args()
    torch.set_num_threads(1)  # a data worker

    if not args.compare:
        dataset, source, _ = pipeline(args.data, args.crop, args.scenes_size)
        dataset[(0, 0)]  # load the photo bank once, as a worker does at start
        dt, load = time_one(dataset, source, args.n)
        print(
            f"{source.origin}, crop {args.crop}: {1 / dt:.0f} images/s per worker "
            f"({dt * 1000:.1f} ms: {load * 1000:.1f} ms making/reading the image, "
            f"{(dt - load) * 1000:.1f} ms two views)"
        )
        return

    kinds = [k.strip() for k in args.compare.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        p.error(f"unknown kind(s) {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    with tempfile.TemporaryDirectory() as tmp:
        datasets = {}
        for kind in kinds:
            if write_kind(kind, Path(tmp) / kind, args.files, args.size, args.compress):
                datasets[kind] = pipeline(str(Path(tmp) / kind), args.crop)
                datasets[kind][0][(0, 0)]  # first-use costs (imports) out of the timing
        best = {kind: (float("inf"), float("inf")) for kind in datasets}
        for _ in range(args.rounds):
            for kind, (dataset, source, _) in datasets.items():
                views, load = time_one(dataset, source, args.n)
                best[kind] = min(best[kind], (views, load))
    print(f"{args.size} x {args.size} px, crop {args.crop}, one worker (1 thread), best of {args.rounds} rounds:")
    print(f"  {'kind':<7} {'images/s':>9} {'ms/image':>9} {'reading':>9} {'two views':>10}  input")
    for kind, (views, load) in best.items():
        line = datasets[kind][2].split(" (")[0].removeprefix("input: ")
        print(
            f"  {kind:<7} {1 / views:>9.0f} {views * 1000:>9.1f} {load * 1000:>9.1f} {(views - load) * 1000:>10.1f}  "
            f"{line[:60]}"
        )


if __name__ == "__main__":
    main()
