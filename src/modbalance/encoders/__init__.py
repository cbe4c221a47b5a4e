"""Encoders that map one modality's input to a feature vector of shape ``(B, D)``."""
