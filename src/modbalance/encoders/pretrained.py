"""Load a local torchvision-layout ResNet-18 checkpoint (e.g. ImageNet weights) into a ResNet-18 encoder.

Nothing is ever downloaded: the caller passes the path of a file written by ``torch.save``. The file may
hold a state dict, or a dict with a ``"state_dict"`` or ``"model"`` entry holding one (common
training-checkpoint layouts); keys prefixed with ``module.`` (``DataParallel``) are accepted. The classifier
``fc.*`` is dropped, because our trunk has none.

The stem ``conv1`` is handled by ``conv1=``:

* ``"auto"`` (default): copy when the channel counts match, **adapt** a 3-channel stem to a 1-channel one
  (spectrograms), and keep the encoder's random init for any other count, e.g. the 2-channel flow stem, as the
  UCF-101 setting of GeWu-Lab/BalanceBenchmark does (its 2-channel flow stem is not loaded from ImageNet).
* ``"adapt"``: always adapt, ``W'[:, k] = sum_c W[:, c] / C'`` for each of the ``C'`` target channels.
* ``"reinit"``: never load ``conv1``; it keeps the encoder's current (random) weights.

Why **sum** (not mean) for one channel: a gray image fed to the RGB network as ``[x, x, x]`` gives
``sum_c W_c * x``, so the summed kernel reproduces exactly the pretrained stem's response to the spectrogram
seen as a gray image, and ``bn1``'s pretrained running statistics still fit. The mean would shrink the stem's
output 3×, which ``bn1`` only absorbs in training mode. The general rule ``sum / C'`` keeps this property for
``C'`` channels (each fed the same gray image); for 2-channel flow it equals 1.5× the channel-mean replicated
by TSN's cross-modality initialisation (Wang et al., ECCV 2016).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["PretrainedLoad", "load_pretrained"]

logger = logging.getLogger(__name__)

Conv1Mode = Literal["auto", "adapt", "reinit"]
_CONV1_MODES = ("auto", "adapt", "reinit")
_MAX_LISTED = 8


class PretrainedLoad(NamedTuple):
    """What :func:`load_pretrained` did.

    Attributes:
        path: The checkpoint file.
        loaded: Keys copied into the encoder (``conv1.weight`` included when copied or adapted).
        dropped: Checkpoint keys deliberately not loaded (``fc.*``, and ``conv1.weight`` when kept at init).
        conv1: ``"copied"``, ``"adapted"`` (summed over the checkpoint's channels, see the module doc) or
            ``"kept_init"``.

    Example:
        >>> import tempfile, pathlib
        >>> from modbalance.encoders.resnet import ResNet18, resnet18_visual
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     file = pathlib.Path(tmp) / "rgb.pth"
        ...     torch.save(ResNet18(3).state_dict(), file)  # a headless RGB ResNet-18, same stem
        ...     report = load_pretrained(resnet18_visual(), file)
        >>> report.conv1, report.dropped, len(report.loaded) > 100, report.path.name
        ('copied', (), True, 'rgb.pth')
    """

    path: Path
    loaded: tuple[str, ...]
    dropped: tuple[str, ...]
    conv1: str


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    more = len(keys) - _MAX_LISTED
    return f"[{shown}{f', ... ({more} more)' if more > 0 else ''}]"


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """Read ``path`` and return a flat ``{key: Tensor}`` state dict, or raise naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"pretrained checkpoint not found: '{path}'")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # RuntimeError, EOFError, UnpicklingError, ... depending on the damage
        raise ValueError(
            f"could not read pretrained checkpoint '{path}' ({type(err).__name__}: {err}); expected a file "
            "written by torch.save holding a ResNet-18 state dict"
        ) from err
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping):
        raise TypeError(
            f"pretrained checkpoint '{path}' holds a {type(obj).__name__}; expected a state dict (a "
            "mapping of parameter names to tensors), or a dict with a 'state_dict' or 'model' entry"
        )
    bad = [f"{k!r} ({type(v).__name__})" for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, Tensor))]
    if bad:
        raise TypeError(f"pretrained checkpoint '{path}' has entries that are not str -> Tensor: {_listing(bad)}")
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):
        logger.debug("stripping the 'module.' prefix from the keys of %s", path)
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _adapt_conv1(weight: Tensor, in_channels: int) -> Tensor:
    """Sum a stem kernel ``(64, C, k, k)`` over ``C`` and spread it evenly over ``in_channels`` channels."""
    summed = weight.sum(dim=1, keepdim=True) / in_channels
    return summed.expand(-1, in_channels, -1, -1).contiguous()


def load_pretrained(encoder: nn.Module, path: str | os.PathLike[str], *, conv1: Conv1Mode = "auto") -> PretrainedLoad:
    """Load a local torchvision-layout ResNet-18 checkpoint into ``encoder`` in place.

    Args:
        encoder: A module with torchvision's ResNet-18 key names and a ``conv1`` convolution, e.g.
            :class:`~modbalance.encoders.resnet.ResNet18Encoder` of any stem width.
        path: The checkpoint file (never downloaded).
        conv1: How to treat the stem: ``"auto"``, ``"adapt"`` or ``"reinit"`` (see the module docstring).

    Returns:
        A :class:`PretrainedLoad` listing the loaded and dropped keys and the ``conv1`` action.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The file cannot be read, or it does not fit the encoder (missing keys, unexpected keys,
            shape mismatches; the message names them all), or ``conv1`` is not a known mode.
        TypeError: The file does not hold a state dict, or ``encoder`` has no ``conv1`` ``nn.Conv2d``.

    Example:
        >>> import tempfile, pathlib
        >>> from modbalance.encoders.resnet import ResNet18, resnet18_audio
        >>> rgb = ResNet18(3).state_dict()
        >>> rgb["fc.weight"], rgb["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     file = pathlib.Path(tmp) / "resnet18.pth"
        ...     torch.save(rgb, file)
        ...     report = load_pretrained(resnet18_audio(), file)
        >>> report.conv1, report.dropped
        ('adapted', ('fc.bias', 'fc.weight'))
    """
    if conv1 not in _CONV1_MODES:
        raise ValueError(f"conv1 must be one of {', '.join(_CONV1_MODES)}; got {conv1!r}")
    stem = getattr(encoder, "conv1", None)
    if not isinstance(stem, nn.Conv2d):
        raise TypeError(f"{type(encoder).__name__} has no 'conv1' nn.Conv2d; expected a ResNet-18 encoder")
    path = Path(path)
    state = _read_state_dict(path)
    dropped = sorted(k for k in state if k.startswith("fc."))
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}

    target = encoder.state_dict()
    action = "copied"
    source = state.get("conv1.weight")
    want = target["conv1.weight"].shape
    channels_differ = source is not None and source.dim() == 4 and source.shape[1] != want[1]
    same_kernel = source is not None and source.shape[0] == want[0] and source.shape[2:] == want[2:]
    if conv1 == "reinit" or (conv1 == "auto" and channels_differ and want[1] != 1):
        action = "kept_init"
        if source is not None:
            dropped = sorted([*dropped, "conv1.weight"])
            del state["conv1.weight"]
    elif channels_differ and same_kernel:
        action = "adapted"
        state["conv1.weight"] = _adapt_conv1(state["conv1.weight"], want[1])

    missing = [
        k
        for k in target
        if k not in state
        and not k.endswith("num_batches_tracked")  # absent from older torchvision files; BN fills it in
        and not (k == "conv1.weight" and action == "kept_init")
    ]
    unexpected = [k for k in state if k not in target]
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs encoder {tuple(target[k].shape)}"
        for k, v in state.items()
        if k in target and v.shape != target[k].shape
    ]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"missing keys {_listing(missing)}")
        if unexpected:
            problems.append(f"unexpected keys {_listing(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatches {_listing(mismatched)}")
        raise ValueError(
            f"pretrained checkpoint '{path}' does not fit {type(encoder).__name__} "
            f"(expected a torchvision-layout ResNet-18): {'; '.join(problems)}"
        )

    result = encoder.load_state_dict(state, strict=False)
    leftover = [k for k in result.missing_keys if not k.endswith("num_batches_tracked") and k != "conv1.weight"]
    if leftover or result.unexpected_keys:  # cannot happen after the checks above; guards against drift
        raise ValueError(f"loading '{path}' left keys unset: {_listing(leftover + result.unexpected_keys)}")
    logger.info("loaded %d tensors from %s (conv1 %s, dropped %s)", len(state), path, action, dropped)
    return PretrainedLoad(path=path, loaded=tuple(sorted(state)), dropped=tuple(dropped), conv1=action)
