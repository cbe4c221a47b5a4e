"""Lazy imports of the optional media packages behind the ``data`` extra."""

from __future__ import annotations

import importlib
from types import ModuleType

#: import name -> PyPI name, for the error message.
_PIP_NAMES = {
    "av": "av",
    "soundfile": "soundfile",
    "PIL": "pillow",
    "PIL.Image": "pillow",
    "h5py": "h5py",
    "scipy": "scipy",
    "scipy.signal": "scipy",
    "numpy": "numpy",
    "tqdm": "tqdm",
}


def require(module: str, purpose: str = "reading benchmark data") -> ModuleType:
    """Import an optional dependency, or raise an ImportError that names the extra to install.

    Args:
        module: the import name, e.g. ``"av"`` or ``"PIL.Image"``.
        purpose: what it is needed for, used in the error message.

    Returns:
        The imported module.

    Raises:
        ImportError: the package is not installed; the message says ``pip install "modbalance[data]"``.

    Example:
        >>> require("numpy").__name__
        'numpy'
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        pip_name = _PIP_NAMES.get(module, module.split(".")[0])
        raise ImportError(
            f"{purpose} needs the optional package '{pip_name}', which is not installed. "
            f'Install the data extra: pip install "modbalance[data]"'
        ) from error
