"""Training: data sets in the real on-disk layouts, augmentation, samplers, shards, statistics, and the engine.

Modules (imported lazily by the CLI; nothing heavy here):
- data: manifests of the AudioSet/ESC-50/Speech Commands/folder layouts, ClipDataset, collate;
- augment: waveform mixup, frequency/time masks, Speech Commands noise + roll (pure functions);
- sampler: uniform/shuffled/balanced epoch sampler that splits one global order over DDP ranks;
- shards: tar shards for data sets too large for one file per clip;
- stats: the dataset's normalisation mean/std as the reference computes them.
"""
