"""UCI Multiple Features (``mfeat``): 2,000 handwritten digits, 10 classes, six feature views.

The data set of van Breukelen et al. (1998), UCI Machine Learning Repository, "Multiple Features"
(licence CC BY 4.0): each digit 0-9 has 200 samples, described by six views of very different
strength. ``modbalance prep mfeat`` (:mod:`modbalance.prep.mfeat`) writes the prepared folder this
loader reads: ``<view>.npy`` per view, ``labels.npy``, ``splits.npy`` (a seeded stratified split) and
``manifest.json``. It is :class:`~modbalance.data.features.FeatureTables` with those file names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from modbalance.data.features import FeatureTables

__all__ = ["MFEAT_CLASSES", "MFEAT_VIEWS", "MultipleFeatures"]

PathLike = str | os.PathLike[str]

#: View name -> (feature count, description), in the order of the UCI release.
MFEAT_VIEWS: dict[str, tuple[int, str]] = {
    "fou": (76, "Fourier coefficients of the character shapes"),
    "fac": (216, "profile correlations"),
    "kar": (64, "Karhunen-Loeve coefficients"),
    "pix": (240, "pixel averages in 2 x 3 windows"),
    "zer": (47, "Zernike moments"),
    "mor": (6, "morphological features"),
}
#: Class order: the digits 0-9 (the UCI files list 200 rows of each digit, in this order).
MFEAT_CLASSES: tuple[str, ...] = tuple(str(digit) for digit in range(10))


class MultipleFeatures(FeatureTables):
    """A split of the prepared UCI Multiple Features folder (six views, standardised with training statistics).

    Args:
        root: the folder written by ``modbalance prep mfeat``.
        split: ``train``, ``val`` or ``test`` (as recorded in ``splits.npy``).
        modalities: the views to keep (a list or comma-separated names); ``None``: all six.
        standardize: standardise each column with the training rows' mean and standard deviation.

    Example:
        >>> import tempfile, numpy as np
        >>> from modbalance.prep.mfeat import write_prepared
        >>> root = tempfile.mkdtemp()
        >>> views = {v: np.random.default_rng(0).normal(size=(20, w)) for v, (w, _) in MFEAT_VIEWS.items()}
        >>> _ = write_prepared(root, views, np.repeat(np.arange(10), 2), seed=0, val_share=0.0, test_share=0.5)
        >>> test = MultipleFeatures(root, "test")
        >>> len(test), test[0][0]["pix"].shape, test.classes[:3]
        (10, torch.Size([240]), ('0', '1', '2'))
    """

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        modalities: Sequence[str] | str | None = None,
        standardize: bool = True,
    ) -> None:
        super().__init__(
            root,
            split,
            views={view: f"{view}.npy" for view in MFEAT_VIEWS},
            labels="labels.npy",
            splits="splits.npy",
            classes=MFEAT_CLASSES,
            modalities=modalities,
            standardize=standardize,
        )
