"""Audio front-ends: exact shapes (docs/datasets.md) and parity with test-local transcriptions of the references."""

import math

import numpy as np
import pytest
import scipy.signal
import torch

from modbalance.data.spectrogram import (
    AST_MEAN,
    AST_STD,
    AUDIO_RECIPES,
    a1_spectrogram,
    a1p_spectrogram,
    a2_spectrogram,
    a3_fbank,
    a4_magnitude,
    compute_spectrogram,
    kaldi_fbank,
    log_stft,
    tile_to_length,
)


def _librosa_stft(x: np.ndarray, n_fft: int, hop: int, pad_mode: str) -> np.ndarray:
    """librosa.stft(center=True) transcribed: pad n_fft//2 both sides, periodic Hann, rfft per frame."""
    padded = np.pad(x, n_fft // 2, mode=pad_mode)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    n_frames = 1 + (len(padded) - n_fft) // hop
    frames = np.stack([padded[i * hop : i * hop + n_fft] for i in range(n_frames)], axis=1)
    return np.abs(np.fft.rfft(frames * window[:, None], axis=0))


@pytest.mark.parametrize(
    ("fn", "samples", "shape"),
    [
        (a1_spectrogram, 3 * 22050, (257, 188)),
        (lambda w: a1p_spectrogram(w, start=0), 5 * 16000, (129, 626)),
        (lambda w: a1p_spectrogram(w, start=80000), 10 * 16000, (129, 626)),
        (a1p_spectrogram, 10 * 16000, (129, 1251)),
        (a2_spectrogram, 10 * 16000, (257, 1004)),
        (lambda w: a2_spectrogram(w, seconds=3.0), 3 * 16000, (257, 299)),
        (a3_fbank, 10 * 16000, (1024, 128)),
        (a4_magnitude, 10 * 44100, (257, 1003)),
    ],
)
def test_recipe_shapes_match_the_reference_arithmetic(fn, samples, shape) -> None:
    wave = torch.rand(samples, generator=torch.Generator().manual_seed(1)) * 2 - 1
    assert tuple(fn(wave).shape) == shape


def test_kaldi_fbank_has_998_frames_for_10_s_before_padding() -> None:
    assert kaldi_fbank(torch.zeros(160000) + 0.1).shape == (1 + (160000 - 400) // 160, 128) == (998, 128)


def test_registry_shapes_are_what_the_functions_give() -> None:
    for name, recipe in AUDIO_RECIPES.items():
        wave = torch.rand(recipe.sample_rate * 2) - 0.5
        assert tuple(compute_spectrogram(name, wave).shape) == recipe.shape, name


def test_unknown_recipe_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown audio recipe 'a9'.*a1, a1p"):
        compute_spectrogram("a9", torch.zeros(10))


def test_tiling_equals_np_tile_three_times_for_clips_over_one_second() -> None:
    x = np.random.default_rng(0).uniform(-1, 1, 25000).astype(np.float32)
    expected = np.tile(x, 3)[: 3 * 22050]
    assert np.array_equal(tile_to_length(torch.from_numpy(x), 3 * 22050).numpy(), expected)


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_a1_matches_a_transcription_of_the_librosa_recipe(pad_mode: str) -> None:
    x = np.random.default_rng(2).uniform(-1.2, 1.2, 30000)  # out of range: the recipe clips to [-1, 1]
    tiled = np.clip(np.tile(x, 3)[: 3 * 22050], -1, 1)
    expected = np.log(_librosa_stft(tiled, 512, 353, pad_mode) + 1e-7)
    got = a1_spectrogram(torch.from_numpy(x), pad_mode=pad_mode).numpy()
    assert got.shape == expected.shape == (257, 188)
    np.testing.assert_allclose(got, expected, atol=2e-3, rtol=1e-4)


def test_pad_modes_differ_only_in_the_edge_frames() -> None:
    x = torch.rand(22050 * 3) - 0.5
    reflect, constant = log_stft(x, 512, 353, pad_mode="reflect"), log_stft(x, 512, 353, pad_mode="constant")
    assert not torch.allclose(reflect[:, 0], constant[:, 0])
    torch.testing.assert_close(reflect[:, 1:-1], constant[:, 1:-1])


def test_a2_matches_scipy_spectrogram_plus_log_and_znorm() -> None:
    x = np.random.default_rng(3).uniform(-1, 1, 16000 * 10)
    _, _, spec = scipy.signal.spectrogram(x, 16000, nperseg=512, noverlap=353)
    spec = np.log(spec + 1e-7)
    spec = (spec - spec.mean()) / (spec.std() + 1e-9)
    np.testing.assert_allclose(a2_spectrogram(torch.from_numpy(x)).numpy(), spec, atol=1e-4)


def test_a4_is_the_magnitude_stft_without_log() -> None:
    x = np.random.default_rng(4).uniform(-1, 1, 44100 * 10)
    expected = _librosa_stft(x, 512, 440, "reflect")
    np.testing.assert_allclose(a4_magnitude(torch.from_numpy(x)).numpy(), expected, rtol=1e-3, atol=1e-3)


def test_a1p_crop_equals_the_spectrogram_of_the_cropped_wave() -> None:
    x = torch.rand(16000 * 3, generator=torch.Generator().manual_seed(5)) - 0.5
    tiled = x.repeat(4)[:160000]  # 3 s -> 6 s -> 12 s, then 10 s
    expected = log_stft(tiled[12800 : 12800 + 80000], 256, 128)
    torch.testing.assert_close(a1p_spectrogram(x, start=12800), expected)


def _kaldi_frame_reference(frame: np.ndarray, sample_rate: int = 16000, bins: int = 128) -> np.ndarray:
    """One Kaldi fbank frame written out from the Kaldi documentation, in float64."""
    frame = frame - frame.mean()
    frame = frame - 0.97 * np.concatenate([frame[:1], frame[:-1]])
    n = len(frame)
    frame = frame * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / (n - 1)))
    power = np.abs(np.fft.rfft(frame, 512)) ** 2
    mel = lambda f: 1127.0 * np.log(1 + f / 700.0)
    lo, hi = mel(20.0), mel(8000.0)
    step = (hi - lo) / (bins + 1)
    out = np.zeros(bins)
    for m in range(bins):
        left, centre, right = lo + m * step, lo + (m + 1) * step, lo + (m + 2) * step
        for k in range(256):  # Kaldi uses the first n_fft/2 bins only
            f = mel(k * sample_rate / 512)
            if left < f < right:
                weight = (f - left) / (centre - left) if f <= centre else (right - f) / (right - centre)
                out[m] += weight * power[k]
    return np.log(np.maximum(out, np.finfo(np.float32).eps))


def test_kaldi_fbank_matches_a_per_frame_transcription() -> None:
    x = np.random.default_rng(6).uniform(-1, 1, 400 + 160 * 3)
    got = kaldi_fbank(torch.from_numpy(x)).numpy()
    assert got.shape == (4, 128)
    for index in (0, 3):
        expected = _kaldi_frame_reference(x[index * 160 : index * 160 + 400])
        np.testing.assert_allclose(got[index], expected, atol=1e-4)


def test_kaldi_fbank_peaks_at_the_mel_bin_of_a_pure_tone() -> None:
    t = np.arange(16000) / 16000
    feats = kaldi_fbank(torch.from_numpy(0.5 * np.sin(2 * np.pi * 1000 * t)))
    mel = lambda f: 1127.0 * math.log(1 + f / 700.0)
    expected_bin = (mel(1000) - mel(20)) / ((mel(8000) - mel(20)) / 129) - 1
    peak = feats.mean(dim=0).argmax().item()
    assert abs(peak - expected_bin) <= 1


def test_a3_pads_with_zeros_before_the_ast_normalisation() -> None:
    feats = a3_fbank(torch.rand(16000 * 3) - 0.5)
    real_frames = 1 + (48000 - 400) // 160
    torch.testing.assert_close(feats[real_frames:], torch.full((1024 - real_frames, 128), -AST_MEAN / (2 * AST_STD)))
    raw = kaldi_fbank(torch.rand(16000 * 3) - 0.5)
    assert real_frames == raw.shape[0]
