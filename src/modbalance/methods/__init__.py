"""Balancing methods compared in docs/comparison-methods.md, one module each."""
