"""Batched model inference, per-asset baselines (commissioning) and alert decisions."""
