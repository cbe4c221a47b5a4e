"""Datasets: the built-in imbalance lab and loaders for the standard benchmarks.

Every dataset yields ``(inputs, target)`` pairs, where ``inputs`` maps a modality name to a
tensor and ``target`` is the integer class, so PyTorch's default collate gives
``(dict[str, Tensor], Tensor)`` batches.
"""
