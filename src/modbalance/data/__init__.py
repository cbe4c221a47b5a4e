"""Datasets: the built-in imbalance lab, loaders for the standard benchmarks, and feature tables.

Every dataset yields ``(inputs, target)`` pairs, where ``inputs`` maps a modality name to a
tensor and ``target`` is the integer class, so PyTorch's default collate gives
``(dict[str, Tensor], Tensor)`` batches.
"""

from modbalance.data.av_toy import make_av_toy_release
from modbalance.data.ave import AVE
from modbalance.data.cremad import CremaD
from modbalance.data.errors import DataFileError, MissingFileError
from modbalance.data.features import FeatureTables
from modbalance.data.kinetics_sounds import KineticsSounds
from modbalance.data.mfeat import MultipleFeatures
from modbalance.data.mosei import CMUMOSEI
from modbalance.data.presets import DATASET_PRESETS, preset_data_options
from modbalance.data.registry import DATASETS, build_dataset, dataset_info
from modbalance.data.synthetic import LAB_PRESETS, LabRecipe, LabSpec, LabSplit, ModalitySpec, SyntheticLab, lab_preset
from modbalance.data.ucf101 import UCF101
from modbalance.data.vggsound import VGGSound

__all__ = [
    "AVE",
    "CMUMOSEI",
    "DATASETS",
    "DATASET_PRESETS",
    "LAB_PRESETS",
    "UCF101",
    "CremaD",
    "DataFileError",
    "FeatureTables",
    "KineticsSounds",
    "LabRecipe",
    "LabSpec",
    "LabSplit",
    "MissingFileError",
    "ModalitySpec",
    "MultipleFeatures",
    "SyntheticLab",
    "VGGSound",
    "build_dataset",
    "dataset_info",
    "lab_preset",
    "make_av_toy_release",
    "preset_data_options",
]
