"""The COCO instances layout: writer and readers.

Under ``root``: images of split ``s`` in ``root/s/``, annotations in
``root/annotations/instances_<s>.json`` (boxes ``[x, y, w, h]``, polygon or
RLE segmentation, ``iscrowd``). Category ids may be sparse (COCO's 1..90);
readers map them to contiguous labels 1..K in id order. The writer writes PNG
images, boxes of each instance's visible pixels, masks as RLE from
``pycocotools.mask.encode`` and category id = class id 1..K.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from densecl.errors import InputError
from densecl.inputs.files import Pixels, image_size, save_image
from densecl.inputs.files.photo import open_rgb

if TYPE_CHECKING:
    from densecl.inputs import InputSpec
    from densecl.scenes.compose import Scene


class CocoWriter:
    """Writes scenes in the COCO layout: ``<split>/<name>.png`` and one instances file per split."""

    def __init__(self, out: Path, classes: tuple[str, ...], splits: tuple[str, ...]) -> None:
        self.out, self.classes, self.splits = out, classes, splits
        (out / "annotations").mkdir(parents=True, exist_ok=True)
        self.data = {s: {"images": [], "annotations": []} for s in self.splits}
        self.next_ann = 1

    def add(self, split: str, name: str, scene: Scene) -> None:
        from pycocotools import mask as mask_utils

        (self.out / split).mkdir(exist_ok=True)
        file_name = save_image(self.out / split, name, scene.image, ".png")  # 16-bit or more bands: .tif
        image_id = len(self.data[split]["images"]) + 1
        h, w = scene.semantic.shape
        self.data[split]["images"].append({"id": image_id, "file_name": file_name, "width": w, "height": h})
        for m, (box, label) in enumerate(zip(scene.boxes, scene.labels), start=1):
            mask = np.asfortranarray((scene.instances == m).astype(np.uint8))
            rle = mask_utils.encode(mask)
            x1, y1, x2, y2 = (float(v) for v in box)
            self.data[split]["annotations"].append(
                {
                    "id": self.next_ann,
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": float(mask.sum()),
                    "iscrowd": 0,
                    "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")},
                }
            )
            self.next_ann += 1

    def finish(self) -> None:
        categories = [{"id": k, "name": name, "supercategory": "shape"} for k, name in enumerate(self.classes) if k > 0]
        for split in self.splits:
            body = {"info": {"description": "densecl scenes"}, **self.data[split], "categories": categories}
            (self.out / "annotations" / f"instances_{split}.json").write_text(json.dumps(body))


@dataclass
class CocoSplit:
    """A COCO instances file and its image folder.

    ``image_ids`` may be a subset (``--train-fraction``) or drop images without
    annotations (training); ``coco`` always holds the whole file.
    """

    images_dir: Path
    annotation_file: Path
    coco: Any  # pycocotools.coco.COCO
    image_ids: list[int]
    category_ids: list[int]  # contiguous label k (1..K) <- category_ids[k - 1]
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def image_name(self, index: int) -> str:
        """The file of image ``index``, as it stands in the annotation file."""
        return self.coco.imgs[self.image_ids[index]]["file_name"]

    def load(self, index: int, with_masks: bool, inputs: InputSpec | None = None) -> tuple[Pixels, dict]:
        """Image (an RGB photo, or bands as ``inputs`` reads them) and target: ``boxes`` M x 4 xyxy,
        ``labels`` M (1..K), ``masks`` M x H x W uint8.

        Crowd regions and boxes with no area are left out of training targets.
        """
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        path = self.images_dir / info["file_name"]
        image = inputs.read(path) if inputs is not None else open_rgb(path)
        anns = [a for a in self.coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
        anns = [a for a in anns if a["bbox"][2] > 0 and a["bbox"][3] > 0]
        label_of = {c: k + 1 for k, c in enumerate(self.category_ids)}
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=np.float32)
        target = {
            "boxes": boxes.reshape(-1, 4),
            "labels": np.array([label_of[a["category_id"]] for a in anns], dtype=np.int64),
        }
        if with_masks:
            with warnings.catch_warnings():  # pycocotools' decode trips a numpy 2 deprecation, harmlessly
                warnings.simplefilter("ignore", DeprecationWarning)
                masks = [self.coco.annToMask(a) for a in anns]
            target["masks"] = (
                np.stack(masks).astype(np.uint8) if masks else np.zeros((0, *image_size(image)[::-1]), np.uint8)
            )
        return image, target


def read_coco(root: Path, split: str, drop_empty: bool) -> CocoSplit:
    """Reads ``root/annotations/instances_<split>.json`` and checks the images exist.

    Args:
        drop_empty: leave out images without a usable annotation (for training).
    """
    root = Path(root)
    annotation_file = root / "annotations" / f"instances_{split}.json"
    images_dir = root / split
    if not annotation_file.is_file():
        raise InputError(
            f"annotation file {annotation_file} does not exist; expected COCO's annotations/instances_<split>.json"
        )
    if not images_dir.is_dir():
        raise InputError(f"image folder {images_dir} does not exist; COCO images of split {split!r} go there")
    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(annotation_file))
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{annotation_file} is not a COCO instances file ({type(e).__name__}: {e})") from None
    category_ids = sorted(coco.cats)
    if not category_ids:
        raise InputError(f"{annotation_file} defines no category")
    image_ids = sorted(coco.imgs)
    if drop_empty:
        image_ids = [
            i
            for i in image_ids
            if any(not a.get("iscrowd", 0) and a["bbox"][2] > 0 and a["bbox"][3] > 0 for a in coco.imgToAnns.get(i, []))
        ]
    if not image_ids:
        raise InputError(
            f"split {split!r} is empty: {annotation_file} has no image" + (" with annotations" if drop_empty else "")
        )
    missing = [coco.imgs[i]["file_name"] for i in image_ids if not (images_dir / coco.imgs[i]["file_name"]).is_file()]
    if missing:
        raise InputError(f"{len(missing)} image(s) of {annotation_file} are not in {images_dir}, e.g. {missing[0]}")
    classes = tuple(coco.cats[c].get("name", str(c)) for c in category_ids)
    return CocoSplit(images_dir, annotation_file, coco, image_ids, category_ids, classes)


def coco_image_paths(path: Path) -> list[Path]:
    """The image files of a COCO annotation file alone (no labels).

    E.g. ``annotations/instances_train2017.json`` -> ``train2017/*``.

    The folder is found as ``../<split>``, ``./<split>`` or ``./`` next to the file,
    ``<split>`` being the file name's last ``_`` part.
    """
    try:
        images = json.loads(path.read_text())["images"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise InputError(f"{path} is not a COCO annotation file with an 'images' list ({e})") from None
    split = path.stem.split("_")[-1]  # instances_train2017 -> train2017
    for root in (path.parent.parent / split, path.parent / split, path.parent):
        if root.is_dir() and images and (root / images[0]["file_name"]).exists():
            return [root / im["file_name"] for im in images]
    raise InputError(
        f"cannot find the images of {path}: looked for {images[0]['file_name'] if images else '?'} in ../{split}, "
        f"./{split} and ./"
    )
