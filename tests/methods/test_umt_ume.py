"""UME and UMT (Du et al., ICML 2023) against test-local oracles.

No official code of the paper was found (searched the stored GitHub index for the authors and the
method names), so UMT's loss is checked against a transcription of BalanceBenchmark
(``GeWu-Lab/BalanceBenchmark`` at commit 4c1482f, ``balancemm/trainer/UMT_trainer.py`` lines
132-144: ``criterion = nn.CrossEntropyLoss()``, ``MSE = nn.MSELoss()``, ``loss = criterion(out,
label)``, then inside ``modulation_starts <= epoch <= modulation_ends`` for every teacher
``loss += self.scaling * MSE(teacher_features, model.encoder_result[modality])`` with the teacher
run under ``torch.no_grad()``). UME is checked against its definition: uni-modal models trained
independently (hand-built separate models), predictions combined.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modbalance import MultimodalClassifier
from modbalance.fusion import Concat, FiLM, Sum
from modbalance.methods import METHODS, MethodRequirementError, create_method
from modbalance.methods.unimodal_teachers import UME, UMT, ume_ensemble
from modbalance.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from modbalance.train.errors import ConfigError
from modbalance.train.teachers import load_teacher, load_teachers, teacher_checkpoint

DIMS_IN = {"audio": 6, "visual": 5}


def _encoders(seed: int = 0, width: int = 4) -> dict[str, nn.Module]:
    torch.manual_seed(seed)
    return {m: nn.Sequential(nn.Linear(d, 8), nn.ReLU(), nn.Linear(8, width)) for m, d in DIMS_IN.items()}


def _model(fusion: str = "concat", seed: int = 0) -> MultimodalClassifier:
    encoders = _encoders(seed)
    dims = dict.fromkeys(DIMS_IN, 4)
    head = Concat(dims, num_classes=3) if fusion == "concat" else Sum(dims, num_classes=3)
    return MultimodalClassifier(encoders, head)


def _batch(seed: int = 1, n: int = 16) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn(n, d, generator=g) for m, d in DIMS_IN.items()}
    return inputs, torch.randint(0, 3, (n,), generator=g)


# --------------------------------------------------------------------------------------- UMT oracle
def _bb_umt_loss(model, teachers, batch, label, *, scaling, epoch, starts=0, ends=80):
    """``UMT_trainer.py`` 132-144, with our model's encoder outputs as ``encoder_result``."""
    criterion = nn.CrossEntropyLoss()
    mse = nn.MSELoss()
    encoder_result = {m: model.encoders[m](batch[m]) for m in model.modalities}
    out = model.fusion(encoder_result)
    loss = criterion(out, label)
    if starts <= epoch <= ends:
        for modality in teachers:
            with torch.no_grad():
                out_unimodal = teachers[modality](batch[modality])
            loss += scaling * mse(out_unimodal, encoder_result[modality])
    return loss


@pytest.mark.parametrize("scaling", [10.0, 0.37])
def test_umt_loss_and_gradients_match_balancebenchmark(scaling: float) -> None:
    teachers = _encoders(seed=7)
    model = _model()
    oracle_model = copy.deepcopy(model)
    inputs, y = _batch()
    method = UMT(copy.deepcopy(teachers), scaling=scaling)
    method.check(model)
    loss = method.loss(model, model(inputs), y, epoch=3, inputs=inputs)
    expected = _bb_umt_loss(oracle_model, teachers, inputs, y, scaling=scaling, epoch=3)
    assert torch.allclose(loss, expected, atol=1e-6)
    loss.backward()
    expected.backward()
    for (name, p), q in zip(model.named_parameters(), oracle_model.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name
    assert all(p.grad is None for p in method.teachers.parameters())  # frozen: no gradient


def test_umt_window_outside_is_cross_entropy_and_distance_is_mean_squared() -> None:
    model = _model()
    inputs, y = _batch()
    method = UMT(_encoders(seed=7), scaling=10.0, start_epoch=2, end_epoch=4)
    out = model(inputs)
    assert torch.allclose(method.loss(model, out, y, epoch=5, inputs=inputs), F.cross_entropy(out.logits, y))
    teacher = method.teachers["audio"](inputs["audio"])
    hand = ((out.features["audio"] - teacher) ** 2).sum() / teacher.numel()
    assert torch.allclose(method.distances(out, inputs)["audio"], hand, atol=1e-7)


def test_umt_teachers_are_frozen_out_of_the_optimizer_and_stay_in_eval_mode() -> None:
    teachers = {m: nn.Sequential(nn.Linear(d, 4), nn.BatchNorm1d(4), nn.Dropout(0.5)) for m, d in DIMS_IN.items()}
    method = UMT(teachers)
    model = _model()
    method.train()
    assert not any(t.training for t in method.teachers.modules())
    groups = method.param_groups(model, lr=0.1)
    in_optimizer = {id(p) for group in groups for p in group["params"]}
    assert not any(id(p) in in_optimizer for p in method.teachers.parameters())
    inputs, _ = _batch()
    before = method.teachers["audio"][1].running_mean.clone()
    first = method.distances(model(inputs), inputs)["audio"]
    assert torch.equal(method.teachers["audio"][1].running_mean, before)  # eval BN: statistics untouched
    assert torch.equal(first, method.distances(model(inputs), inputs)["audio"])  # no dropout noise


def test_umt_errors() -> None:
    model = _model()
    inputs, y = _batch()
    with pytest.raises(ValueError, match=r"method 'umt' needs teachers.*method.options.teachers"):
        UMT()
    with pytest.raises(ValueError, match=r"scaling=-1.0 must be a finite number >= 0"):
        UMT(_encoders(), scaling=-1.0)
    with pytest.raises(ValueError, match=r"teachers\['audio'\] must be an nn.Module or a checkpoint path"):
        UMT({"audio": 3})
    with pytest.raises(MethodRequirementError, match=r"teachers of \['audio'\] are file names"):
        UMT({"audio": "runs/unimodal-audio/checkpoints/best.pt", "visual": nn.Identity()}).check(model)
    with pytest.raises(MethodRequirementError, match=r"missing: \['visual'\], not in the model: \[\]"):
        UMT({"audio": _encoders()["audio"]}).check(model)
    wide = UMT(_encoders(width=6))
    with pytest.raises(ValueError, match=r"'audio' teacher gives features of shape \(16, 6\).*\(16, 4\)"):
        wide.loss(model, model(inputs), y, epoch=0, inputs=inputs)
    with pytest.raises(ValueError, match="call loss"):
        UMT(_encoders()).loss(model, model(inputs), y, epoch=0)


# --------------------------------------------------------------------------------------- UME
def test_ume_loss_is_the_sum_of_separate_uni_modal_cross_entropies_and_predicts_the_ensemble() -> None:
    model = _model("sum")
    inputs, y = _batch()
    out = model(inputs)
    method = UME()
    separate = {m: model.fusion.heads[m](model.encoders[m](inputs[m])) for m in model.modalities}
    expected = sum(F.cross_entropy(z, y) for z in separate.values())
    assert torch.allclose(method.loss(model, out, y, epoch=0), expected, atol=1e-6)
    assert torch.allclose(method.predict(model, out), separate["audio"] + separate["visual"], atol=1e-6)
    mean_probs = (F.softmax(separate["audio"], 1) + F.softmax(separate["visual"], 1)) / 2
    assert torch.allclose(UME("probs").predict(model, out), mean_probs.log(), atol=1e-6)
    concat = _model("concat")
    out = concat(inputs)
    assert torch.allclose(method.predict(concat, out), out.logits, atol=1e-6)  # slices add up to the head


def test_ume_ensemble_by_hand() -> None:
    z = {"a": torch.tensor([[1.0, 0.0]]), "v": torch.tensor([[0.0, 3.0]])}
    assert torch.equal(ume_ensemble(z), torch.tensor([[1.0, 3.0]]))
    e, e3 = torch.e, torch.e**3
    hand = torch.tensor([[(e / (e + 1) + 1 / (1 + e3)) / 2, (1 / (e + 1) + e3 / (1 + e3)) / 2]]).log()
    assert torch.allclose(ume_ensemble(z, "probs"), hand, atol=1e-6)
    with pytest.raises(ValueError, match="ensemble must be one of logits, probs"):
        ume_ensemble(z, "vote")


def _independent_step(model: MultimodalClassifier, inputs, y, *, lr: float, bias_share: float | None):
    """Hand oracle: one separate uni-modal model (encoder + own linear head) per modality, one SGD step each."""
    results = {}
    for m in model.modalities:
        encoder = copy.deepcopy(model.encoders[m])
        if isinstance(model.fusion, Sum):
            head = copy.deepcopy(model.fusion.heads[m])
        else:  # the modality's column block of the concat head, with its bias share
            start = 0 if m == "audio" else 4
            head = nn.Linear(4, 3)
            with torch.no_grad():
                head.weight.copy_(model.fusion.head.weight[:, start : start + 4])
                head.bias.copy_(model.fusion.head.bias * bias_share)
        alone = nn.Sequential(encoder, head)
        optimizer = torch.optim.SGD(alone.parameters(), lr=lr, momentum=0.9, weight_decay=1e-3)
        F.cross_entropy(alone(inputs[m]), y).backward()
        bias_grad = head.bias.grad.clone()
        optimizer.step()
        results[m] = (encoder, head, bias_grad)
    return results


def test_ume_one_sgd_step_equals_independent_uni_modal_training_with_sum_fusion() -> None:
    model = _model("sum")
    inputs, y = _batch()
    oracle = _independent_step(model, inputs, y, lr=0.1, bias_share=None)
    method = UME()
    optimizer = torch.optim.SGD(method.param_groups(model, 0.1), lr=0.1, momentum=0.9, weight_decay=1e-3)
    method.loss(model, model(inputs), y, epoch=0).backward()
    method.before_step(model, optimizer, epoch=0)
    optimizer.step()
    for m, (encoder, head, _) in oracle.items():
        for p, q in zip(model.encoders[m].parameters(), encoder.parameters(), strict=True):
            assert torch.allclose(p, q, atol=1e-6)
        assert torch.allclose(model.fusion.heads[m].weight, head.weight, atol=1e-6)
        assert torch.allclose(model.fusion.heads[m].bias, head.bias, atol=1e-6)


def test_ume_with_concat_is_independent_except_the_shared_bias() -> None:
    model = _model("concat")
    inputs, y = _batch()
    oracle = _independent_step(model, inputs, y, lr=0.1, bias_share=0.5)
    method = UME()
    optimizer = torch.optim.SGD(method.param_groups(model, 0.1), lr=0.1, momentum=0.9, weight_decay=1e-3)
    method.loss(model, model(inputs), y, epoch=0).backward()
    bias_grad = model.fusion.head.bias.grad.clone()
    optimizer.step()
    for m, (encoder, head, _) in oracle.items():
        for p, q in zip(model.encoders[m].parameters(), encoder.parameters(), strict=True):
            assert torch.allclose(p, q, atol=1e-6)
        start = 0 if m == "audio" else 4
        assert torch.allclose(model.fusion.head.weight[:, start : start + 4], head.weight, atol=1e-6)
    # the one coupling: the shared bias gets share * (sum of the modalities' bias gradients)
    assert torch.allclose(bias_grad, 0.5 * (oracle["audio"][2] + oracle["visual"][2]), atol=1e-6)


def test_ume_errors_and_registry() -> None:
    with pytest.raises(ValueError, match="ensemble='vote' must be one of logits, probs"):
        UME("vote")
    film = MultimodalClassifier(_encoders(), FiLM(dict.fromkeys(DIMS_IN, 4), num_classes=3))
    with pytest.raises(MethodRequirementError, match="method 'ume' needs a fusion with exact per-modality heads"):
        UME().check(film)
    assert isinstance(create_method("ume", ensemble="probs"), UME)
    assert "umt" in METHODS and "ume" in METHODS


# --------------------------------------------------------------------------------------- teacher files
def _unimodal_checkpoint(path, modality: str, *, width: int = 4, method: str | None = None) -> None:
    torch.manual_seed(3)
    alone = MultimodalClassifier(
        {modality: nn.Sequential(nn.Linear(DIMS_IN[modality], 8), nn.ReLU(), nn.Linear(8, width))},
        Concat({modality: width}, num_classes=3),
    )
    config = f"method: {{name: '{method or 'unimodal:' + modality}'}}\n"
    save_checkpoint(path, {"model": alone.state_dict(), "config": config, "epoch": 0})


def test_load_teacher_gives_a_frozen_copy_with_the_checkpoint_weights(tmp_path) -> None:
    folder = tmp_path / "unimodal-audio-seed2"
    _unimodal_checkpoint(folder / "checkpoints" / "best.pt", "audio")
    model = _model()
    teachers = load_teachers({"audio": str(tmp_path / "unimodal-audio-seed{seed}")}, model, seed=2)
    saved = load_checkpoint(folder / "checkpoints" / "best.pt")["model"]
    teacher = teachers["audio"]
    assert torch.equal(teacher[0].weight, saved["encoders.audio.0.weight"])
    assert torch.equal(teacher[2].bias, saved["encoders.audio.2.bias"])
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert not torch.equal(model.encoders["audio"][0].weight, teacher[0].weight)  # a copy, the student untouched


def test_teacher_loading_errors(tmp_path) -> None:
    model = _model()
    with pytest.raises(FileNotFoundError, match=r"method.options.teachers.audio='.*nowhere': no such file"):
        load_teachers({"audio": str(tmp_path / "nowhere")}, model, seed=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"has no checkpoints/best.pt"):
        teacher_checkpoint(tmp_path / "empty", seed=0)
    with pytest.raises(ConfigError, match=r"the only placeholder allowed is \{seed\}"):
        teacher_checkpoint(str(tmp_path / "run-{modality}"), seed=0)
    with pytest.raises(ConfigError, match=r"method.options.teachers.text: the model has no modality 'text'"):
        load_teachers({"text": "x.pt"}, model, seed=0)
    with pytest.raises(ConfigError, match="must map each modality"):
        load_teachers(["a.pt"], model, seed=0)
    with pytest.raises(ConfigError, match=r"need a late-fusion model \(model.kind=late\), got Linear"):
        load_teachers({"audio": "a.pt"}, nn.Linear(2, 2), seed=0)
    visual = tmp_path / "visual.pt"
    _unimodal_checkpoint(visual, "visual")
    with pytest.raises(ConfigError, match=r"method.name='unimodal:visual' run; the UMT teacher of 'audio' must"):
        load_teacher(visual, "audio", model)
    joint = tmp_path / "joint.pt"
    _unimodal_checkpoint(joint, "audio", method="joint")
    with pytest.raises(ConfigError, match=r"method.name='joint' run"):
        load_teacher(joint, "audio", model)
    bare = tmp_path / "bare.pt"  # no config: the encoder keys decide
    save_checkpoint(bare, {"model": {"encoders.visual.0.weight": torch.zeros(8, 5)}})
    with pytest.raises(
        ConfigError, match=r"holds no encoder for modality 'audio' \(its model has encoders for \['visual'\]"
    ):
        load_teacher(bare, "audio", model)
    wide = tmp_path / "wide.pt"
    _unimodal_checkpoint(wide, "audio", width=6)
    with pytest.raises(ConfigError, match=r"(?s)wide.pt: its 'audio' encoder does not fit .*size mismatch"):
        load_teacher(wide, "audio", model)
    plain = tmp_path / "plain.pt"
    torch.save({"model": {}}, plain)
    with pytest.raises(CheckpointError, match=r"plain.pt"):
        load_teacher(plain, "audio", model)


# --------------------------------------------------------------------------------------- trainer
def _tiny(tmp_path, *extra: str):
    from modbalance.train import load_config

    base = [f"output_dir={tmp_path}", "train.device=cpu", "train.probe=false", "train.epochs=1"]
    return load_config("lab/tiny", [*base, *extra])


def test_trainer_runs_ume_one_epoch(tmp_path) -> None:
    from modbalance.train import run

    folder = run(_tiny(tmp_path, "method.name=ume", "model.fusion=sum"))
    record = json.loads((folder / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["epoch"] == 0 and record["val/accuracy"] == record["val/accuracy"]


def test_trainer_refuses_umt_without_teachers(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"method 'umt' needs teachers.*method.options.teachers.<modality>="):
        _tiny(tmp_path, "method.name=umt")


def test_trainer_runs_umt_with_teachers_from_unimodal_runs(tmp_path) -> None:
    from modbalance.train import run

    teachers = {m: run(_tiny(tmp_path, f"method.name=unimodal:{m}", f"run_name=unimodal-{m}-seed0")) for m in DIMS_IN}
    config = _tiny(
        tmp_path,
        "method.name=umt",
        "run_name=umt",
        f"method.options.teachers.audio={tmp_path}/unimodal-audio-seed{{seed}}",
        f"method.options.teachers.visual={teachers['visual'] / 'checkpoints' / 'best.pt'}",
    )
    folder = run(config)
    record = json.loads((folder / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["epoch"] == 0
    method_state = load_checkpoint(folder / "checkpoints" / "best.pt")["method"]
    for m, teacher_run in teachers.items():
        saved = load_checkpoint(teacher_run / "checkpoints" / "best.pt")["model"]
        teacher_keys = [k for k in method_state if k.startswith(f"teachers.{m}.")]
        assert teacher_keys
        for key in teacher_keys:  # loaded from the uni-modal run and not trained further
            assert torch.equal(method_state[key], saved[f"encoders.{m}." + key[len(f"teachers.{m}.") :]]), key


@pytest.mark.slow
def test_umt_resume_mid_epoch_is_exact(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A UMT run cut mid-epoch and resumed equals an uncut one (teachers travel in the method state)."""
    from modbalance.train import run

    for m in DIMS_IN:
        run(_tiny(tmp_path, f"method.name=unimodal:{m}", f"run_name=unimodal-{m}-seed0"))
    base = ["method.name=umt", "train.epochs=2", "train.checkpoint_every_steps=3"]
    base += [f"method.options.teachers.{m}={tmp_path}/unimodal-{m}-seed{{seed}}" for m in DIMS_IN]
    reference = run(_tiny(tmp_path, *base, "run_name=ref"))

    import modbalance.train.trainer as trainer_module

    real_step = trainer_module.train_step

    def crashing(parts, inputs, target, *, step: int, **kwargs) -> None:
        if step == 10:  # after the checkpoint of step 9: epoch 1, mid-epoch (8 steps per epoch)
            raise KeyboardInterrupt
        real_step(parts, inputs, target, step=step, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", crashing)
    with pytest.raises(KeyboardInterrupt):
        run(_tiny(tmp_path, *base, "run_name=cut"))
    monkeypatch.setattr(trainer_module, "train_step", real_step)
    cut = tmp_path / "cut"
    run(resume=cut)
    assert (cut / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()
    final_cut = load_checkpoint(cut / "checkpoints" / "last.pt")["model"]
    for key, value in load_checkpoint(reference / "checkpoints" / "last.pt")["model"].items():
        assert torch.equal(final_cut[key], value), key
