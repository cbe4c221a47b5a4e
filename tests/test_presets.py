"""Reference presets carry the official windows, filters and OPM settings; the new options check their input.

Sources: GeWu-Lab/OGM-GE_CVPR2022 main.py (window 0-50, 4-D kernels), GeWu-Lab/BML_TPAMI2024 code/main.py
(warm-up epochs 0-5) and scripts/*.sh, GeWu-Lab/BalanceBenchmark configs/trainer_config.yaml. The step-by-step
comparison with the official code is tests/test_reference_transcriptions.py.
"""

import re

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


def test_balancebenchmark_opm_carries_its_quirks_by_name():
    opm = OPM(**opm_preset("balancebenchmark"))
    assert (opm.ratio, opm.ratio_eps, opm.rescale_eps, opm.grad_through_theta) == ("in_place", 1e-5, 1e-5, "true")
    assert opm.rule == "sum_others"
    assert OPM(**opm_preset("tpami2024_code")).grad_through_theta == "tpami"
    audio, visual = encoders()
    assert OGM({"audio": audio, "visual": visual}, alpha=0.3, **ogm_preset("balancebenchmark")).ratio_eps == 1e-5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ratio": "aliased"}, "Unknown ratio mode 'aliased'. Available: exact, in_place"),
        ({"grad_through_theta": "yes"}, "Unknown grad_through_theta 'yes'. Available: none, tpami, true"),
        ({"ratio_eps": -1e-5}, "ratio_eps must be a finite number >= 0, got -1e-05"),
        ({"rescale_eps": float("nan")}, "rescale_eps must be a finite number >= 0, got nan"),
        (
            {"grad_through_theta": "tpami", "rescale": "per_modality"},
            "grad_through_theta='tpami' needs rescale='reference' and delay=False, got rescale='per_modality'",
        ),
        ({"grad_through_theta": "true", "delay": True}, "needs rescale='reference' and delay=False"),
    ],
)
def test_opm_options_reject_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        OPM(**kwargs)


def test_gradient_through_theta_refuses_detached_scores():
    opm = OPM(grad_through_theta="true")
    feats = {"audio": torch.ones(3, 2), "visual": torch.ones(3, 2)}
    with pytest.raises(ValueError, match="needs scores that carry gradient"):
        opm(feats, {"audio": torch.tensor(2.0), "visual": torch.tensor(1.0)})


def test_ogm_ratio_eps_rejects_bad_values():
    audio, visual = encoders()
    with pytest.raises(ValueError, match=re.escape("ratio_eps must be a finite number >= 0, got -1")):
        OGM({"audio": audio, "visual": visual}, alpha=0.3, ratio_eps=-1)


#: Dataset settings named after a code base -> the reference preset of that code base.
CODE_BASE = {"ogm_ge": "cvpr2022_code", "tpami": "tpami2024_code", "balancebench": "balancebenchmark"}


def test_generated_configs_agree_with_the_reference_preset_of_their_code_base():
    """The trainer's configs and REFERENCE_PRESETS state the same facts where both state them."""
    pytest.importorskip("omegaconf")
    from modbalance.data.presets import DATASET_PRESETS, config_names
    from modbalance.train import load_config

    checked = 0
    for name in config_names():
        setting = max((s for s in DATASET_PRESETS if name.startswith(s + "_")), key=len)
        code_base = CODE_BASE.get(setting.split("/")[1])
        config = load_config(name, ["data.root=/nonexistent"]).method
        method = config.name
        if code_base is None or method == "joint":  # the model-kind variants (tpami_mmtm, ...) train joint
            continue
        assert method in ("ogm_ge", "opm"), name  # the code-base settings ship these two methods only
        if method == "opm":
            reference = opm_preset(code_base)
            keys = ("q_base", "lam", "p_exe", "rescale", "start_epoch", "end_epoch")
            assert {k: getattr(config, k) for k in keys} == {k: reference[k] for k in keys}, name
        else:
            reference = ogm_preset(code_base)
            assert (config.coefficient, config.start_epoch) == (reference["coefficient"], reference["start_epoch"])
            if setting != "cremad/tpami":  # the journal's CREMA-D window 0-80 comes from the maintainer (BML #3)
                assert config.end_epoch == reference["end_epoch"], name
            if isinstance(reference["param_filter"], str):
                assert config.param_filter == reference["param_filter"], name
        checked += 1
    assert checked == 13
