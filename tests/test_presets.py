"""Reference presets reproduce the official windows, filters and OPM settings (METHOD.md §5, §8, §11)."""

import pytest
import torch
from torch import nn

from modbalance import OGM, OPM
from modbalance.presets import REFERENCE_PRESETS, ogm_preset, opm_preset


def encoders():
    torch.manual_seed(0)
    make = lambda c: nn.Sequential(nn.Conv2d(c, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    return make(1), make(3)


def selected_dims(ogm, name):
    return sorted(p.dim() for p in ogm.groups[name])


def test_cvpr_code_modulates_conv_kernels_only_in_epochs_0_to_50():
    audio, visual = encoders()
    ogm = OGM({"audio": audio, "visual": visual}, alpha=0.8, **ogm_preset("cvpr2022_code"))
    assert selected_dims(ogm, "audio") == [4] and ogm.noise
    assert [ogm.active(e) for e in (0, 50, 51)] == [True, True, False]


def test_tpami_code_hidden_warm_up_becomes_an_explicit_window():
    audio, visual = encoders()
    ogm = OGM({"audio": audio, "visual": visual}, alpha=0.8, **ogm_preset("tpami2024_code"))
    assert [ogm.active(e) for e in (5, 6, 60, 61)] == [False, True, True, False]
    opm = OPM(**opm_preset("tpami2024_code"))
    assert (opm.q_base, opm.lam, opm.p_exe, opm.rescale) == (0.5, 0.5, 0.7, "reference")
    assert [opm.active(e) for e in (5, 6, 500)] == [False, True, True]


def test_balancebenchmark_modulates_every_tensor_that_is_not_1d():
    audio, visual = encoders()
    ogm = OGM({"audio": audio, "visual": visual}, alpha=0.3, **ogm_preset("balancebenchmark"))
    assert selected_dims(ogm, "audio") == [2, 4]  # Linear and conv weights; BN and biases skipped
    assert [ogm.active(e) for e in (9, 10, 80, 81)] == [False, True, True, False]
    assert OPM(**opm_preset("balancebenchmark")).q_base == 0.4


def test_overrides_and_errors():
    assert ogm_preset("cvpr2022_code", end_epoch=80)["end_epoch"] == 80
    with pytest.raises(ValueError, match="Unknown reference preset 'cvpr'"):
        ogm_preset("cvpr")
    with pytest.raises(ValueError, match="no OPM settings"):
        opm_preset("cvpr2022_code")
    assert set(REFERENCE_PRESETS) == {"cvpr2022_code", "tpami2024_code", "balancebenchmark"}
