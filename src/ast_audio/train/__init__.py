"""Training: data sets in the real on-disk layouts, augmentation, samplers, shards, statistics, and the engine.

Modules (nothing is imported here; `recipes` and `layouts` import no torch, so the CLI's --help reads them):
- recipes: TrainConfig (with its FrontendConfig, AugmentConfig and ModelSpec) and the paper's recipes;
- layouts: manifests of the AudioSet/ESC-50/Speech Commands/folder layouts;
- data: ClipDataset (the one mixup item builder), collate; augment: mixup, masks, noise (pure functions);
- sampler: uniform/shuffled/balanced epoch sampler that splits one global order over DDP ranks;
- shards: tar shards for data sets too large for one file per clip; stats: normalisation mean/std;
- optim, engine, evaluate, checkpointing, outputs, average, curves, dist: the training run and what it writes;
- metrics: mAP, AUC, d', accuracy and the ESC-50 fold summary.
"""
