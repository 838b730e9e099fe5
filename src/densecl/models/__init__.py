"""Backbones, heads, queues and the assembled DenseCL model."""
