"""Transfer evaluation of pre-trained backbones, one file per protocol.

=============== ============================================= ===============================
protocol        what is trained                                paper
=============== ============================================= ===============================
svm             one-vs-rest linear SVMs on frozen pooled C5    supplementary Table 1 (VOC07)
knn             nothing: weighted kNN on frozen pooled C5      (InstDisc / DINO protocol)
linear          a linear classifier on frozen pooled C5        (fast linear probe)
seg_probe       a 1x1 conv on frozen C5 (or C4 + C5)           (fast dense signal)
seg_finetune    FCN, all layers                                VOC / Cityscapes mIoU tables
det             Faster / Mask R-CNN R-FPN, all layers          COCO tables, supplementary Table 2
=============== ============================================= ===============================

Each protocol module has a frozen ``...Config`` dataclass, ``load_data(config)``
(reads and checks the data before any model is built) and
``evaluate(backbone, data, config, seeds) -> results.Evaluation``. Shared
files: ``datasets`` (labelled data readers), ``features`` (frozen features and
the bit-identical check), ``metrics`` (pure metric functions), ``results``
(result files and tables), ``backbone`` (weights and their provenance),
``finetune`` (batches over ranks, DDP and SyncBN).
"""
