"""Every evaluation protocol by name: what a protocol is and which module holds it.

``densecl eval NAME`` looks ``NAME`` up here, imports only that module, and
builds its command line from the protocol's config dataclass. Nothing here
imports torch, so ``densecl eval --help`` lists the protocols at once.

To add a protocol, write one module under ``densecl/evaluation/`` that declares:

1. A frozen config dataclass. Each field is one ``--flag`` (the name with
   dashes) whose default is the field's; give every field its help (and, for
   a fixed set of values, its choices) with :func:`densecl.evaluation.options.option`
   or reuse a shared field from that module (``data``, ``train_split``,
   ``device``, ``workers``...). ``str``, ``int``, ``float``, ``bool`` and
   ``tuple[...]`` of numbers are understood.
2. ``load_data(config)``: reads and checks the data, before any model is
   built, raising :class:`~densecl.errors.InputError` for anything the user can fix.
3. ``evaluate(backbone, data, config, seeds) -> results.Evaluation``.

and bundles them at the end of the module as
``PROTOCOL = Protocol(name, ConfigClass, load_data, evaluate, description=__doc__)``.
Then add one line to :data:`PROTOCOLS` below: ``name: Entry(module, one-line help)``.
The CLI tests run over this table, so the new protocol's parser is checked at once.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple


@dataclass(frozen=True)
class Protocol:
    """What a protocol module declares as ``PROTOCOL``.

    Attributes:
        name: the ``densecl eval`` subcommand, as in :data:`PROTOCOLS`.
        config: the frozen config dataclass; its fields are the protocol's options.
        load_data: ``config -> data``, every check done before a model is built.
        evaluate: ``(backbone, data, config, seeds) -> results.Evaluation``.
        description: the module docstring; its first paragraph heads ``--help``.
        torchrun: a fine-tuning protocol that may run in several processes
            under torchrun (the others refuse to).
    """

    name: str
    config: type
    load_data: Callable[[Any], Any]
    evaluate: Callable[..., Any]
    description: str = ""
    torchrun: bool = False


class Entry(NamedTuple):
    module: str  # the module that declares PROTOCOL
    help: str  # one line for ``densecl eval --help``, shown without importing the module


PROTOCOLS: dict[str, Entry] = {
    "svm": Entry("densecl.evaluation.svm", "VOC07 SVM on frozen pooled features (mAP; supplementary Table 1)"),
    "knn": Entry("densecl.evaluation.knn", "weighted kNN on frozen pooled features (top-1)"),
    "linear": Entry("densecl.evaluation.linear", "linear classifier on frozen pooled features (top-1)"),
    "seg-probe": Entry("densecl.evaluation.seg_probe", "1x1-conv segmentation probe on frozen dense features (mIoU)"),
    "seg-finetune": Entry("densecl.evaluation.seg_finetune", "FCN fine-tuning, all layers (mIoU; VOC / Cityscapes)"),
    "det": Entry(
        "densecl.evaluation.det",
        "Faster / Mask R-CNN fine-tuning, R-FPN or R-C4 (COCO AP; VOC07+12 AP as detectron2 scores it)",
    ),
    "correspondence": Entry(
        "densecl.evaluation.correspondence",
        "dense matches between two views scored against their known geometry (accuracy)",
    ),
    "dense-nn": Entry(
        "densecl.evaluation.dense_nn",
        "in-context nearest-neighbour segmentation from a patch memory, no training (mIoU)",
    ),
    "overcluster": Entry(
        "densecl.evaluation.overcluster", "K-means of frozen val patch features, clusters matched to classes (mIoU)"
    ),
}


def load(name: str) -> Protocol:
    """Imports the module of protocol ``name`` (only that one) and returns its ``PROTOCOL``."""
    if name not in PROTOCOLS:
        raise KeyError(f"no evaluation protocol {name!r}; registered: {', '.join(PROTOCOLS)}")
    protocol = importlib.import_module(PROTOCOLS[name].module).PROTOCOL
    assert protocol.name == name, (
        f"{PROTOCOLS[name].module} declares protocol {protocol.name!r}, registered as {name!r}"
    )
    return protocol
