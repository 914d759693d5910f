"""Parallelism that changes how one forward pass is computed (sequence parallelism), applied from outside the model."""
