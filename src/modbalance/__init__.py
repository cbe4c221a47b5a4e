"""modbalance: on-the-fly modulation (OGM, OGM-GE, OPM) for balanced multimodal learning."""

__version__ = "0.1.0"
