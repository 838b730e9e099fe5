"""Pre-training input: two-view augmentation, the epoch sampler and the unlabeled image sources."""
