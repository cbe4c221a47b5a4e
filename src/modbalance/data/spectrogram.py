"""The audio front-ends of the reference loaders (four recipes, docs/datasets.md), in plain torch.

=====  ==========================================================  ===========  ===================
Id     Recipe                                                       Rate         Output per clip
=====  ==========================================================  ===========  ===================
a1     tile to 3 s, log(|STFT| + 1e-7), n_fft 512, hop 353          22 050 Hz    257 × 188 (F × T)
a1p    tile to ≥ 10 s, 5-s crop, log(|STFT| + 1e-7), 256 / 128      16 000 Hz    129 × 626
a2     scipy-style PSD spectrogram (Tukey, 512 / overlap 353),      16 000 Hz    257 × 1004 (10 s)
       log(S + 1e-7), per-clip z-normalisation                                   257 × 299 (3 s, a2_3s)
a3     Kaldi fbank (128 HTK mel, 25/10 ms, povey-free hanning,       16 000 Hz    1024 × 128 (T × mel)
       pre-emphasis 0.97, power, log), padded, AST-normalised
a4     |STFT| (no log), n_fft 512, hop 440, 10 s forced             44 100 Hz    257 × 1003
=====  ==========================================================  ===========  ===================

Every STFT here is centred with an **explicit** pad mode. librosa ≥ 0.10 pads with zeros
(``"constant"``) while the 2022 reference runs used librosa 0.8 (``"reflect"``); the recipes default to
``"reflect"`` (the era of the published numbers) and take ``pad_mode`` to switch.

Example:
    >>> import torch
    >>> wave = torch.randn(22050)           # 1 s at 22.05 kHz; a1 tiles it to 3 s
    >>> compute_spectrogram("a1", wave).shape
    torch.Size([257, 188])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

#: Log floor of the reference log-spectrograms.
LOG_EPS = 1e-7
#: AudioSet statistics used by AST (and the reference A3 caches) to normalise fbank features.
AST_MEAN = -4.503877
AST_STD = 5.141276


def _as_tensor(wave: Any) -> Tensor:
    tensor = torch.as_tensor(wave, dtype=torch.float32)
    if tensor.ndim != 1:
        raise ValueError(f"expected a 1-D waveform, got shape {tuple(tensor.shape)}")
    if tensor.numel() == 0:
        raise ValueError("expected a non-empty waveform")
    return tensor


def tile_to_length(wave: Tensor, length: int) -> Tensor:
    """Repeat a waveform end to end until it has at least ``length`` samples, then cut to ``length``.

    For clips at least a third of the target (all of CREMA-D) this equals the reference
    ``np.tile(x, 3)[:length]``; shorter clips are tiled more instead of giving a shorter spectrogram.

    Example:
        >>> tile_to_length(torch.tensor([1.0, 2.0]), 5)
        tensor([1., 2., 1., 2., 1.])
    """
    wave = _as_tensor(wave)
    repeats = math.ceil(length / wave.numel())
    return wave.repeat(repeats)[:length]


def log_stft(wave: Tensor, n_fft: int, hop_length: int, *, pad_mode: str = "reflect", log: bool = True) -> Tensor:
    """librosa-style centred STFT with a periodic Hann window: ``log(|S| + 1e-7)`` or ``|S|``.

    Args:
        wave: (N,) samples.
        n_fft: FFT size (= window length).
        hop_length: hop in samples.
        pad_mode: ``"reflect"`` (librosa < 0.10) or ``"constant"`` (librosa ≥ 0.10) centring.
        log: take ``log(|S| + 1e-7)``; ``False`` returns the magnitude.

    Returns:
        (n_fft // 2 + 1, 1 + N // hop_length) float32.

    Example:
        >>> log_stft(torch.zeros(66150), 512, 353).shape
        torch.Size([257, 188])
    """
    wave = _as_tensor(wave)
    if pad_mode not in ("reflect", "constant"):
        raise ValueError(f"pad_mode must be 'reflect' or 'constant', got {pad_mode!r}")
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float32)
    spec = torch.stft(wave, n_fft, hop_length, window=window, center=True, pad_mode=pad_mode, return_complex=True).abs()
    return torch.log(spec + LOG_EPS) if log else spec


def a1_spectrogram(wave: Tensor, *, seconds: float = 3.0, pad_mode: str = "reflect") -> Tensor:
    """Recipe A1 (OGM-GE CREMA-D): 22.05 kHz, tiled to 3 s, clipped, ``log(|STFT| + 1e-7)``, 512 / 353.

    Args:
        wave: (N,) samples at 22 050 Hz.

    Returns:
        (257, 188) for 3 s.

    Example:
        >>> a1_spectrogram(torch.randn(30000)).shape
        torch.Size([257, 188])
    """
    wave = tile_to_length(wave, int(seconds * 22050)).clamp(-1.0, 1.0)
    return log_stft(wave, 512, 353, pad_mode=pad_mode)


def a1p_spectrogram(wave: Tensor, *, start: int | None = None, pad_mode: str = "reflect") -> Tensor:
    """Recipe A1′ (OGM-GE VGGSound): 16 kHz, tile ×2 until ≥ 10 s, 5-s crop, ``log(|STFT| + 1e-7)``, 256 / 128.

    Args:
        wave: (N,) samples at 16 000 Hz.
        start: first sample of the 5-s crop, in [0, 5 · 16000]; ``None`` returns the spectrogram of the
            whole tiled 10 s, (129, 1251), from which a loader crops 626 columns (hop-aligned crop).

    Returns:
        (129, 626) for a crop, (129, 1251) without.

    Example:
        >>> a1p_spectrogram(torch.randn(16000), start=0).shape
        torch.Size([129, 626])
    """
    wave = _as_tensor(wave)
    while wave.numel() < 10 * 16000:
        wave = wave.repeat(2)
    wave = wave[: 10 * 16000].clamp(-1.0, 1.0)
    if start is not None:
        if not 0 <= start <= 5 * 16000:
            raise ValueError(f"start must be in [0, 80000], got {start}")
        wave = wave[start : start + 5 * 16000]
    return log_stft(wave, 256, 128, pad_mode=pad_mode)


def a2_spectrogram(wave: Tensor, *, seconds: float = 10.0, sample_rate: int = 16000) -> Tensor:
    """Recipe A2 (hche11/VGGSound, MMCosine): ``scipy.signal.spectrogram`` defaults, log, z-normalised.

    Tiled to ``seconds``, clipped to [-1, 1]; segments of 512 with overlap 353 (hop 159), no padding,
    per-segment mean removed (``detrend="constant"``), periodic Tukey(0.25) window, one-sided PSD scaling
    (``|X|² / (fs · Σw²)``, doubled except at DC and Nyquist); then ``log(S + 1e-7)`` and
    ``(S − mean) / (std + 1e-9)`` over the whole clip (population std).

    Returns:
        (257, 1 + (N − 512) // 159): 257 × 1004 for 10 s, 257 × 299 for 3 s at 16 kHz.

    Example:
        >>> a2_spectrogram(torch.randn(16000), seconds=3.0).shape
        torch.Size([257, 299])
    """
    n_samples = int(seconds * sample_rate)
    wave = tile_to_length(wave, n_samples).clamp(-1.0, 1.0).double()
    nperseg, hop = 512, 512 - 353
    frames = wave.unfold(0, nperseg, hop)  # (T, 512)
    frames = frames - frames.mean(dim=1, keepdim=True)
    window = _tukey(nperseg, 0.25)
    spec = torch.fft.rfft(frames * window, dim=1).abs().pow(2) / (sample_rate * window.pow(2).sum())
    spec[:, 1:-1] *= 2.0
    spec = torch.log(spec.T + LOG_EPS)
    spec = (spec - spec.mean()) / (spec.std(unbiased=False) + 1e-9)
    return spec.float()


def _tukey(n: int, alpha: float) -> Tensor:
    """Periodic Tukey window (``scipy.signal.get_window(("tukey", alpha), n)``)."""
    m = n + 1  # periodic: a symmetric window of n + 1 points without its last point
    x = torch.arange(m, dtype=torch.float64)
    width = math.floor(alpha * (m - 1) / 2.0)
    window = torch.ones(m, dtype=torch.float64)
    left = x[: width + 1]
    window[: width + 1] = 0.5 * (1 + torch.cos(math.pi * (-1 + 2.0 * left / alpha / (m - 1))))
    right = x[m - width - 1 :]
    window[m - width - 1 :] = 0.5 * (1 + torch.cos(math.pi * (-2.0 / alpha + 1 + 2.0 * right / alpha / (m - 1))))
    return window[:n]


def mel_filterbank(
    num_bins: int, n_fft: int, sample_rate: int, low_freq: float = 20.0, high_freq: float = 0.0
) -> Tensor:
    """Kaldi's triangular HTK-mel filterbank over the FFT bins ``0 … n_fft/2 − 1`` (Nyquist bin weight 0).

    Triangles are linear in mel, ``mel(f) = 1127 ln(1 + f / 700)``; ``high_freq <= 0`` means Nyquist + high_freq.

    Returns:
        (num_bins, n_fft // 2 + 1) float64 weights.

    Example:
        >>> mel_filterbank(128, 512, 16000).shape
        torch.Size([128, 257])
    """
    nyquist = sample_rate / 2.0
    high = high_freq if high_freq > 0 else nyquist + high_freq
    if not 0 <= low_freq < high <= nyquist:
        raise ValueError(f"need 0 <= low_freq < high_freq <= {nyquist}, got {low_freq}, {high}")

    def mel(f: Tensor) -> Tensor:
        return 1127.0 * torch.log1p(f / 700.0)

    half = n_fft // 2
    bin_mel = mel(torch.arange(half, dtype=torch.float64) * sample_rate / n_fft)
    low_mel, high_mel = mel(torch.tensor(low_freq, dtype=torch.float64)), mel(torch.tensor(high, dtype=torch.float64))
    delta = (high_mel - low_mel) / (num_bins + 1)
    left = low_mel + torch.arange(num_bins, dtype=torch.float64)[:, None] * delta
    centre, right = left + delta, left + 2 * delta
    up = (bin_mel[None, :] - left) / (centre - left)
    down = (right - bin_mel[None, :]) / (right - centre)
    weights = torch.clamp(torch.minimum(up, down), min=0.0)
    return torch.cat([weights, torch.zeros(num_bins, n_fft // 2 + 1 - half, dtype=torch.float64)], dim=1)


def kaldi_fbank(
    wave: Tensor,
    *,
    sample_rate: int = 16000,
    num_mel_bins: int = 128,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    preemphasis: float = 0.97,
    window: str = "hanning",
    low_freq: float = 20.0,
    high_freq: float = 0.0,
) -> Tensor:
    """Kaldi ``compute-fbank-feats`` log-mel features (``snip_edges``, no dither, no energy), in torch.

    Per frame of 25 ms every 10 ms: remove the DC offset, pre-emphasise (``x[i] − 0.97 x[i−1]``, with
    ``x[−1] = x[0]``), multiply by the window (``"hanning"``: symmetric Hann; ``"povey"``: Hann^0.85),
    zero-pad to the next power of two, power spectrum, HTK-mel filterbank, ``log(max(·, float32 eps))``.
    Equivalent to ``torchaudio.compliance.kaldi.fbank(htk_compat=True, use_energy=False, dither=0)``.

    Args:
        wave: (N,) samples (not rescaled; AST passes floats in [-1, 1]).

    Returns:
        (1 + (N − frame_length) // frame_shift, num_mel_bins) float32: 998 × 128 for 10 s at 16 kHz.

    Example:
        >>> kaldi_fbank(torch.randn(16000)).shape
        torch.Size([98, 128])
    """
    wave = _as_tensor(wave).double()
    frame_length = int(sample_rate * frame_length_ms / 1000)
    shift = int(sample_rate * frame_shift_ms / 1000)
    if wave.numel() < frame_length:
        raise ValueError(f"waveform of {wave.numel()} samples is shorter than one frame ({frame_length})")
    frames = wave.unfold(0, frame_length, shift)  # (T, L)
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = frames - preemphasis * previous
    if window == "hanning":
        win = torch.hann_window(frame_length, periodic=False, dtype=torch.float64)
    elif window == "povey":
        win = torch.hann_window(frame_length, periodic=False, dtype=torch.float64).pow(0.85)
    else:
        raise ValueError(f"window must be 'hanning' or 'povey', got {window!r}")
    n_fft = 1 << (frame_length - 1).bit_length()
    power = torch.fft.rfft(frames * win, n=n_fft, dim=1).abs().pow(2)
    mel = power @ mel_filterbank(num_mel_bins, n_fft, sample_rate, low_freq, high_freq).T
    floor = torch.finfo(torch.float32).eps
    return torch.log(torch.clamp(mel, min=floor)).float()


def a3_fbank(wave: Tensor, *, target_frames: int = 1024) -> Tensor:
    """Recipe A3 (AST-style fbank of OGM-GE ``process_audio.py`` and BalanceBench).

    Subtract the waveform mean, :func:`kaldi_fbank` (128 mel, hanning), zero-pad or truncate to
    ``target_frames`` frames, then ``(x − (−4.503877)) / (2 · 5.141276)``.

    Args:
        wave: (N,) samples at 16 kHz.

    Returns:
        (target_frames, 128) float32 (time × mel).

    Example:
        >>> a3_fbank(torch.randn(160000)).shape
        torch.Size([1024, 128])
    """
    wave = _as_tensor(wave)
    feats = kaldi_fbank(wave - wave.mean())
    if feats.shape[0] < target_frames:
        feats = torch.nn.functional.pad(feats, (0, 0, 0, target_frames - feats.shape[0]))
    feats = feats[:target_frames]
    return (feats - AST_MEAN) / (2 * AST_STD)


def a4_magnitude(wave: Tensor, *, pad_mode: str = "reflect") -> Tensor:
    """Recipe A4 (AV_preprocess_tool): 44.1 kHz, exactly 10 s (tail repeated), ``|STFT|``, 512 / 440, no log.

    Example:
        >>> a4_magnitude(torch.randn(44100)).shape
        torch.Size([257, 1003])
    """
    wave = tile_to_length(wave, 10 * 44100)
    return log_stft(wave, 512, 440, pad_mode=pad_mode, log=False)


@dataclass(frozen=True)
class AudioRecipe:
    """A named audio front-end: the sample rate it wants and the (F, T) or (T, F) array it gives.

    Attributes:
        name: the recipe id.
        sample_rate: the waveform rate the function expects, in Hz.
        shape: the stored array's shape (for a1p, the full 10 s from which loaders crop).
        fn: waveform (N,) -> array.
        description: one line for manifests and docs.
    """

    name: str
    sample_rate: int
    shape: tuple[int, int]
    fn: Callable[[Tensor], Tensor]
    description: str


AUDIO_RECIPES: dict[str, AudioRecipe] = {
    recipe.name: recipe
    for recipe in (
        AudioRecipe("a1", 22050, (257, 188), a1_spectrogram, "OGM-GE CREMA-D log-STFT, 3 s, 512/353"),
        AudioRecipe("a1p", 16000, (129, 1251), a1p_spectrogram, "OGM-GE VGGSound log-STFT, 10 s, 256/128"),
        AudioRecipe("a2", 16000, (257, 1004), a2_spectrogram, "scipy log-PSD + z-norm, 10 s"),
        AudioRecipe(
            "a2_3s", 16000, (257, 299), lambda w: a2_spectrogram(w, seconds=3.0), "scipy log-PSD + z-norm, 3 s"
        ),
        AudioRecipe("a3", 16000, (1024, 128), a3_fbank, "AST Kaldi fbank, 128 mel, 1024 frames"),
        AudioRecipe("a4", 44100, (257, 1003), a4_magnitude, "magnitude STFT, 10 s, 512/440"),
    )
}


def compute_spectrogram(recipe: str, wave: Any) -> Tensor:
    """Apply the named recipe of :data:`AUDIO_RECIPES` to a waveform at the recipe's sample rate.

    Raises:
        ValueError: unknown recipe (the message lists the valid ones).

    Example:
        >>> compute_spectrogram("a4", torch.zeros(441000)).shape
        torch.Size([257, 1003])
    """
    return get_recipe(recipe).fn(_as_tensor(wave))


def get_recipe(name: str) -> AudioRecipe:
    """Look up a recipe by name, with an error listing the valid names.

    Example:
        >>> get_recipe("a1").sample_rate
        22050
    """
    try:
        return AUDIO_RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown audio recipe {name!r}; valid: {', '.join(AUDIO_RECIPES)}") from None
