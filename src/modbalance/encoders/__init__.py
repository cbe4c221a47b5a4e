"""Encoders that map one modality's input to a feature vector of shape ``(B, D)``.

ResNet-18s for spectrograms, RGB frames and optical flow (written here; torchvision is not a
dependency), an MLP for feature vectors such as the imbalance lab's, and a small Transformer
for feature sequences such as CMU-MOSEI's. ``build_encoder(name, **kwargs)`` builds any of
them by name; pretrained ResNet weights load only from a local file (``load_pretrained``).
"""

from modbalance.encoders.mlp import MLPEncoder
from modbalance.encoders.pretrained import PretrainedLoad, load_pretrained
from modbalance.encoders.registry import ENCODERS, Registry, build_encoder
from modbalance.encoders.resnet import (
    BasicBlock,
    ResNet18,
    ResNet18Encoder,
    resnet18_audio,
    resnet18_flow,
    resnet18_visual,
)
from modbalance.encoders.sequence import SequenceTransformerEncoder

__all__ = [
    "ENCODERS",
    "BasicBlock",
    "MLPEncoder",
    "PretrainedLoad",
    "Registry",
    "ResNet18",
    "ResNet18Encoder",
    "SequenceTransformerEncoder",
    "build_encoder",
    "load_pretrained",
    "resnet18_audio",
    "resnet18_flow",
    "resnet18_visual",
]
