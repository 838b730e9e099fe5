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

Each protocol module declares a frozen ``...Config`` dataclass whose fields
carry their command-line help, ``load_data(config)`` (reads and checks the data
before any model is built) and ``evaluate(backbone, data, config, seeds) ->
results.Evaluation``, bundled as ``PROTOCOL``; ``registry`` names them all and
says how to add one. Shared files: ``options`` (config fields with their help),
``datasets`` (labelled data readers), ``features`` (frozen features and the
bit-identical check), ``probe`` (the standardise + linear probe trainer),
``metrics`` (pure metric functions), ``results`` (result files and tables),
``backbone`` (weights and their provenance), ``finetune`` (batches over ranks,
DDP and SyncBN).
"""
