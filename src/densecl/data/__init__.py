"""Two-view augmentation, unlabeled datasets and the embedded ``scenes`` data."""
