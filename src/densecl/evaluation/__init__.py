"""Transfer evaluation of pre-trained backbones, one file per protocol.

The protocols and their one-line descriptions are :data:`registry.PROTOCOLS`
(``densecl eval --help`` prints them); the guide to each is docs/evaluate.md.

Each protocol module declares a frozen ``...Config`` dataclass whose fields
carry their command-line help, ``load_data(config)`` (reads and checks the data
before any model is built) and ``evaluate(backbone, data, config, seeds) ->
results.Evaluation``, bundled as ``PROTOCOL``; ``registry`` names them all and
says how to add one. Shared files: ``options`` (config fields with their help),
``datasets`` (labelled data readers), ``features`` (frozen features and the
bit-identical check), ``probe`` (the standardise + linear probe trainer),
``metrics`` (pure metric functions), ``results`` (result files and tables),
``backbone`` (weights and their provenance), ``finetune`` (batches over ranks,
DDP and SyncBN, checkpoints of one seed).
"""
