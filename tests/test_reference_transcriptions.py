"""Each reference preset reproduces one modulation step of the official code it is named after.

Every ``official_*`` function below transcribes the official training step (variable names and
control flow kept; repository, commit, file and lines cited) with two substitutions, so that both
sides see the same random numbers: the execution draw (NumPy's global RNG in the official code) is
passed in as ``exe_draw``, and the Bernoulli keep-mask is passed in as ``mask`` (read back from
which rows our OPM zeroed). The other side is the library, configured only through
``ogm_preset`` / ``opm_preset`` (plus ``p_exe`` and ``noise`` overrides where a test says so). Both
sides start from identical copies of the same small model and run in float64; gradients, drop
probabilities and coefficients must agree to 1e-6.

The GE noise cannot share draws without depending on our generator's internals, so the exact
comparisons use the official ``'OGM'`` branch (the same lines without the noise term) and a separate
statistical check covers the noise.
"""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modbalance import OGM, OPM, MultimodalClassifier, kept_cross_entropy
from modbalance.fusion import Concat
from modbalance.presets import ogm_preset, opm_preset

D, C, B = 4, 3, 24  # feature width per modality, classes, batch
TOL = 1e-6


def encoder() -> nn.Module:
    """Conv kernel (4-D), conv bias and Linear weight/bias: every parameter kind the filters see."""
    return nn.Sequential(nn.Conv2d(1, 16, 3), nn.Flatten(), nn.Linear(16 * 9, D)).double()


def build(names: list[str], seed: int) -> MultimodalClassifier:
    torch.manual_seed(seed)
    encoders = {name: encoder() for name in names}
    return MultimodalClassifier(encoders, Concat(dict.fromkeys(names, D), num_classes=C).double())


def batch(model: MultimodalClassifier, seed: int, dominant: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Random inputs; the labels are what ``dominant`` predicts on 3 rows of 4, so that it dominates."""
    g = torch.Generator().manual_seed(seed)
    inputs = {name: torch.randn(B, 1, 5, 5, generator=g, dtype=torch.float64) for name in model.modalities}
    with torch.no_grad():
        predicted = model.unimodal_logits(model.encode(inputs))[dominant].argmax(dim=1)
    noise = torch.randint(0, C, (B,), generator=g)
    return inputs, torch.where(torch.arange(B) % 4 == 0, noise, predicted)


def grads(modules: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    return {
        f"{key}.{name}": torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
        for key, module in modules.items()
        for name, p in module.named_parameters()
    }


def number(value) -> float:
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


def assert_close(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], atol=TOL, rtol=0, msg=key)


def kept_rows(dropped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Which rows our OPM kept, per modality (features are never exactly zero otherwise)."""
    return {name: (value != 0).any(dim=1) for name, value in dropped.items()}


# ------------------------------------------------------------------------------------------------------------------
# OGM-GE CVPR 2022: GeWu-Lab/OGM-GE_CVPR2022, main.py at 343dc1d, lines 80-148 (concat fusion).
# ------------------------------------------------------------------------------------------------------------------
def official_cvpr_step(model: nn.Module, spec, image, label, args) -> dict[str, float]:
    criterion = nn.CrossEntropyLoss()
    softmax = nn.Softmax(dim=1)
    relu = nn.ReLU(inplace=True)
    tanh = nn.Tanh()
    # line 80 (the AVClassifier returns the encoder features and the fused output)
    a, v = model.module.audio_net(spec), model.module.visual_net(image)
    out = model.module.fusion_module.fc_out(torch.cat((a, v), dim=1))
    # lines 88-93
    weight_size = model.module.fusion_module.fc_out.weight.size(1)
    out_v = (
        torch.mm(v, torch.transpose(model.module.fusion_module.fc_out.weight[:, weight_size // 2 :], 0, 1))
        + model.module.fusion_module.fc_out.bias / 2
    )
    out_a = (
        torch.mm(a, torch.transpose(model.module.fusion_module.fc_out.weight[:, : weight_size // 2], 0, 1))
        + model.module.fusion_module.fc_out.bias / 2
    )
    loss = criterion(out, label)  # line 95
    loss.backward()  # line 98
    # lines 105-124
    score_v = sum([softmax(out_v)[i][label[i]] for i in range(out_v.size(0))])
    score_a = sum([softmax(out_a)[i][label[i]] for i in range(out_a.size(0))])
    ratio_v = score_v / score_a
    ratio_a = 1 / ratio_v
    if ratio_v > 1:
        coeff_v = 1 - tanh(args.alpha * relu(ratio_v))
        coeff_a = 1
    else:
        coeff_a = 1 - tanh(args.alpha * relu(ratio_a))
        coeff_v = 1
    # lines 132-148, the 'OGM' branch (OGM_GE adds N(0, (std + 1e-8)^2) noise to the same tensors)
    with torch.no_grad():
        if args.modulation_starts <= args.epoch <= args.modulation_ends:
            for name, parms in model.named_parameters():
                layer = str(name).split(".")[1]
                if "audio" in layer and len(parms.grad.size()) == 4:
                    parms.grad *= coeff_a
                if "visual" in layer and len(parms.grad.size()) == 4:
                    parms.grad *= coeff_v
    return {"audio": number(coeff_a), "visual": number(coeff_v)}


def cvpr_holder(model: MultimodalClassifier) -> nn.Module:
    """The official AVClassifier layout under DataParallel (``module.audio_net...``), same weights."""
    inner = nn.Module()
    inner.audio_net = copy.deepcopy(model.encoders["audio"])
    inner.visual_net = copy.deepcopy(model.encoders["visual"])
    inner.fusion_module = nn.Module()
    inner.fusion_module.fc_out = copy.deepcopy(model.fusion.head)
    holder = nn.Module()
    holder.module = inner
    return holder


@pytest.mark.parametrize("epoch", [0, 50, 51])
@pytest.mark.parametrize("dominant", ["audio", "visual"])
def test_cvpr2022_code_is_the_official_ogm_step(dominant: str, epoch: int) -> None:
    names = ["audio", "visual"]
    model = build(names, seed=1)
    inputs, y = batch(model, seed=2, dominant=dominant)
    official = cvpr_holder(model)
    args = SimpleNamespace(alpha=0.8, modulation_starts=0, modulation_ends=50, epoch=epoch)  # argparse defaults
    coeffs = official_cvpr_step(official, inputs["audio"], inputs["visual"], y, args)

    ogm = OGM(model.modality_parameters(), alpha=0.8, **ogm_preset("cvpr2022_code", noise=False))
    out = model(inputs)
    F.cross_entropy(out.logits, y).backward()
    k = ogm.modulate(out.unimodal_logits, y, epoch=epoch)

    if epoch <= 50:
        assert k == pytest.approx(coeffs, abs=TOL)
        assert k[dominant] < 1.0
    inner = official.module
    theirs = grads({"audio": inner.audio_net, "visual": inner.visual_net, "head": inner.fusion_module.fc_out})
    assert_close(grads({**model.encoders, "head": model.fusion.head}), theirs)


def test_cvpr2022_code_ge_noise_is_standard_normal_times_std_plus_1e8_on_conv_kernels_only() -> None:
    """The OGM_GE branch (main.py lines 137-139): ``g * k + N(0, (std(g) + 1e-8)^2)`` on 4-D tensors."""
    names = ["audio", "visual"]
    model = build(names, seed=3)
    inputs, y = batch(model, seed=4, dominant="audio")
    reference = copy.deepcopy(model)
    out = reference(inputs)
    F.cross_entropy(out.logits, y).backward()
    raw = grads({**reference.encoders})

    generator = torch.Generator().manual_seed(0)
    ogm = OGM(model.modality_parameters(), alpha=0.8, generator=generator, **ogm_preset("cvpr2022_code"))
    out = model(inputs)
    F.cross_entropy(out.logits, y).backward()
    k = ogm.modulate(out.unimodal_logits, y, epoch=0)
    ours = grads({**model.encoders})
    z = []
    for key, g in raw.items():
        modality = key.split(".")[0]
        if g.dim() == 4:  # noise on both modalities, including the one with k = 1
            z.append(((ours[key] - k[modality] * g) / (g.std() + 1e-8)).flatten())
        else:
            torch.testing.assert_close(ours[key], g, atol=0, rtol=0)
    draws = torch.cat(z)  # 288 draws: 5-sigma bounds for a standard normal
    assert abs(float(draws.mean())) < 5 / draws.numel() ** 0.5
    assert abs(float(draws.std()) - 1.0) < 5 / (2 * draws.numel()) ** 0.5


# ------------------------------------------------------------------------------------------------------------------
# TPAMI 2024: GeWu-Lab/BML_TPAMI2024 at 4b3aa4f. code/models/Classifier.py: custom_autograd lines 9-21,
# Modality_drop.execute_drop lines 31-55, calcu_q lines 58-72, Classifier.forward lines 97-150;
# code/main.py: train_epoch lines 91-169; scripts/train_opm.sh (q_base 0.5, lam 0.5, p_exe 0.7),
# scripts/train_ogm.sh (alpha 0.8, window 0-60).
# ------------------------------------------------------------------------------------------------------------------
class custom_autograd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, theta):
        ctx.save_for_backward(input, theta)
        return input / (1 - theta.item())

    @staticmethod
    def backward(ctx, grad_output):
        _input, theta = ctx.saved_tensors  # official: input, theta = ...
        input_grad = 1 / (1 - theta.item()) * grad_output.clone()
        return input_grad, theta


class Modality_drop:
    def __init__(self, dim_list, p_exe=0.7):
        self.dim_list = dim_list
        self.p_exe = p_exe

    def execute_drop(self, fead_list, q, mask, exe_draw):
        B = fead_list[0].shape[0]
        D = fead_list[0].shape[1]
        exe_drop = torch.tensor(exe_draw) >= 1 - self.p_exe  # np.random.rand(1), passed in
        if not exe_drop:
            return fead_list, torch.ones([B], dtype=torch.int32)
        num_mod = len(fead_list)
        d_sum = sum(self.dim_list)
        q_sum = sum(self.dim_list * q)
        theta = q_sum / d_sum
        # mask = Bernoulli(1 - q).sample([B, 1]).permute(2, 1, 0).reshape(num_mod, B, -1): passed in, [2, B, 1]
        concat_list = torch.stack(fead_list, dim=0)  # [2,B,D]
        concat_list = torch.mul(concat_list, mask)
        concat_list = custom_autograd.apply(concat_list, theta)
        mask = torch.transpose(mask, 0, 1).squeeze(-1)  # [B,2]
        update_flag = torch.sum(mask, dim=1) > 0
        cleaned_fea = torch.masked_select(concat_list, update_flag.unsqueeze(-1)).reshape(num_mod, -1, D)
        cleaned_fea = torch.chunk(cleaned_fea, num_mod, dim=0)  # line 53 has a stray "]" here
        cleaned_fea = [_.squeeze(0) for _ in cleaned_fea]  # [B,D]
        return cleaned_fea, update_flag


def calcu_q(performance_1, performance_2, q_base, fix_lambda):
    q = torch.tensor([0.0, 0.0])
    relu = nn.ReLU(inplace=True)
    ratio_1 = torch.tanh(relu(performance_1 / performance_2 - 1))
    ratio_2 = torch.tanh(relu(performance_2 / performance_1 - 1))
    lamda = fix_lambda
    q[0] = q_base * (1 + lamda * ratio_1) if ratio_1 > 0 else 0
    q[1] = q_base * (1 + lamda * ratio_2) if ratio_2 > 0 else 0
    q = torch.clip(q, 0.0, 1.0)
    return q


def official_tpami_step(model: nn.Module, mod_1, mod_2, label, cfg, epoch, mask, exe_draw) -> dict[str, float]:
    softmax = nn.Softmax(dim=1)
    relu = nn.ReLU(inplace=True)
    tanh = nn.Tanh()
    warm_up = 1 if epoch <= 5 else 0  # main.py line 91
    # Classifier.forward (the encoders here return pooled (B, D) features directly)
    out_1 = model.encoder_1(mod_1)
    out_2 = model.encoder_2(mod_2)
    w = model.fusion_model.fxy.weight.clone().detach()
    b = model.fusion_model.fxy.bias.clone().detach()
    t1_bias = b / 2
    t2_bias = b / 2
    t1 = torch.mm(out_1, torch.transpose(w[:, :D], 0, 1)) + t1_bias
    t2 = torch.mm(out_2, torch.transpose(w[:, D:], 0, 1)) + t2_bias
    performance_1 = sum([softmax(t1)[i][int(label[i].item())] for i in range(t1.shape[0])])
    performance_2 = sum([softmax(t2)[i][int(label[i].item())] for i in range(t2.shape[0])])
    update_flag = torch.ones([label.shape[0]], dtype=torch.int32)
    if warm_up == 0 and cfg.use_adam_drop:
        model.q = calcu_q(performance_1, performance_2, cfg.q_base, fix_lambda=cfg.lam)
        cleaned_fea, update_flag = model.modality_drop.execute_drop([out_1, out_2], model.q, mask, exe_draw)
        out = model.fusion_model.fxy(torch.cat([cleaned_fea[0], cleaned_fea[1]], dim=1))
    else:
        out = model.fusion_model.fxy(torch.cat([out_1, out_2], dim=1))
    # main.py lines 95-114
    if warm_up == 0 and cfg.use_adam_drop:
        assert torch.sum(update_flag, dim=0) != 0  # the official code skips the step (`continue`)
        select_mask = update_flag != 0
        label = label[select_mask]
    loss = nn.CrossEntropyLoss()(out, label)
    loss.backward()
    coeff_1, coeff_2 = 1.0, 1.0
    # main.py lines 116-169, the 'OGM' branch
    if warm_up == 0 and cfg.use_modulation:
        radio_1 = performance_1 / performance_2
        radio_2 = performance_2 / performance_1
        if radio_1 > 1:
            coeff_1 = 1 - tanh(cfg.alpha * relu(radio_1))
            coeff_2 = 1
        else:
            coeff_1 = 1
            coeff_2 = 1 - tanh(cfg.alpha * relu(radio_2))
        with torch.no_grad():
            if cfg.modulation_starts <= epoch <= cfg.modulation_ends:
                for name, parms in model.named_parameters():
                    layer_name = str(name).split(".")[0]
                    if "encoder_1" in layer_name and parms.grad is not None and len(parms.grad.size()) == 4:
                        parms.grad *= coeff_1
                    if "encoder_2" in layer_name and parms.grad is not None and len(parms.grad.size()) == 4:
                        parms.grad *= coeff_2
    return {"audio": number(coeff_1), "visual": number(coeff_2)}


def tpami_holder(model: MultimodalClassifier, cfg) -> nn.Module:
    holder = nn.Module()
    holder.encoder_1 = copy.deepcopy(model.encoders["audio"])
    holder.encoder_2 = copy.deepcopy(model.encoders["visual"])
    holder.fusion_model = nn.Module()
    holder.fusion_model.fxy = copy.deepcopy(model.fusion.head)
    holder.modality_drop = Modality_drop(dim_list=torch.tensor(cfg.d), p_exe=cfg.p_exe)
    return holder


def tpami_scores(model: MultimodalClassifier, features, y) -> dict[str, torch.Tensor]:
    """Scores with gradient to the features only (the TPAMI code detaches the head's weight and bias)."""
    weight, bias = model.fusion.head.weight.detach(), model.fusion.head.bias.detach()
    return {
        name: torch.softmax(features[name] @ weight[:, i * D : (i + 1) * D].T + bias / 2, dim=1)
        .gather(1, y[:, None])
        .sum()
        for i, name in enumerate(["audio", "visual"])
    }


@pytest.mark.parametrize("fires", [True, False])
@pytest.mark.parametrize("epoch", [5, 6, 60, 61])
@pytest.mark.parametrize("dominant", ["audio", "visual"])
def test_tpami2024_code_is_the_official_opm_and_ogm_step(dominant: str, epoch: int, fires: bool) -> None:
    names = ["audio", "visual"]
    model = build(names, seed=5)
    inputs, y = batch(model, seed=6, dominant=dominant)
    opm_kwargs = opm_preset("tpami2024_code", p_exe=1.0 if fires else 0.0, generator=torch.Generator().manual_seed(7))
    cfg = SimpleNamespace(
        use_adam_drop=True, use_modulation=True, q_base=0.5, lam=0.5, p_exe=opm_kwargs["p_exe"], d=[D, D]
    )
    cfg.alpha, cfg.modulation_starts, cfg.modulation_ends = 0.8, 0, 60  # scripts/train_ogm.sh
    official = tpami_holder(model, cfg)

    opm = OPM(**opm_kwargs)
    ogm = OGM(model.modality_parameters(), alpha=0.8, **ogm_preset("tpami2024_code", noise=False))
    features = model.encode(inputs)
    dropped = opm(features, tpami_scores(model, features, y), epoch=epoch)
    kept = kept_rows(dropped.features)
    kept_cross_entropy(model.fuse(dropped.features), y, dropped.keep).backward()
    k = ogm.modulate(model.unimodal_logits(features), y, epoch=epoch)

    mask = torch.stack([kept["audio"], kept["visual"]]).double().unsqueeze(-1)  # [2, B, 1]
    coeffs = official_tpami_step(official, inputs["audio"], inputs["visual"], y, cfg, epoch, mask, exe_draw=0.5)
    if epoch > 5:
        q = official.q
        assert [float(dropped.drop_probs[n]) for n in names] == pytest.approx(q.tolist(), abs=TOL)
        assert float(dropped.drop_probs[dominant]) > 0
        assert bool(dropped.keep.all())  # the weak modality is never dropped
    if 6 <= epoch <= 60:
        assert k == pytest.approx(coeffs, abs=TOL)
    theirs = grads({"audio": official.encoder_1, "visual": official.encoder_2, "head": official.fusion_model.fxy})
    assert_close(grads({**model.encoders, "head": model.fusion.head}), theirs)


def test_tpami_gradient_path_changes_the_encoder_gradients() -> None:
    """The theta-as-its-own-gradient path is real: without it the dominant encoder's gradients differ."""
    names = ["audio", "visual"]
    results = []
    for mode in ("tpami", "none"):
        model = build(names, seed=5)
        inputs, y = batch(model, seed=6, dominant="audio")
        opm = OPM(**opm_preset("tpami2024_code", p_exe=1.0, grad_through_theta=mode))
        opm.generator = torch.Generator().manual_seed(7)
        features = model.encode(inputs)
        scores = tpami_scores(model, features, y)
        dropped = opm(features, scores if mode == "tpami" else {n: s.detach() for n, s in scores.items()}, epoch=6)
        kept_cross_entropy(model.fuse(dropped.features), y, dropped.keep).backward()
        results.append(grads({**model.encoders}))
    assert max(float((results[0][k] - results[1][k]).abs().max()) for k in results[0]) > 1e-4


# ------------------------------------------------------------------------------------------------------------------
# BalanceBenchmark: GeWu-Lab/BalanceBenchmark at d7675c1 (2025-01-12), the last commit whose OPM trainer runs.
# balancemm/models/avclassify_model.py: forward lines 90-105, Unimodality_Calculate lines 107-130;
# balancemm/models/fusion_arch.py: ConcatFusion_N lines 33-40;
# balancemm/trainer/OPM_trainer.py: Modality_drop.execute_drop lines 22-49, clip lines 52-57,
# training_step lines 138-203; balancemm/trainer/OGM_trainer.py: training_step lines 89-152;
# configs/trainer_config.yaml: OGM alpha 0.3, window 10-80; OPM alpha 0.5, p_exe 0.7, q_base 0.4, window 0-80.
# ------------------------------------------------------------------------------------------------------------------
class BBModel(nn.Module):
    """The slice of BaseClassifierModel the trainers use, on our encoders (same weights)."""

    def __init__(self, model: MultimodalClassifier) -> None:
        super().__init__()
        self.modalitys = dict.fromkeys(model.modalities).keys()
        self.modality_encoder = nn.ModuleDict({n: copy.deepcopy(model.encoders[n]) for n in model.modalities})
        self.fusion_module = nn.Module()
        self.fusion_module.fc_out = copy.deepcopy(model.fusion.head)
        self.fusion = "concat"
        self.modality_size = dict.fromkeys(model.modalities, D)

    def fuse(self, encoder_res):  # ConcatFusion_N.forward
        output = torch.cat(list(encoder_res.values()), dim=1)
        return self.fusion_module.fc_out(output)

    def forward(self, batch):
        self.encoder_res = {}
        for modality in self.modalitys:
            self.encoder_res[modality] = self.modality_encoder[modality](batch[modality])
        self.encoder_res["output"] = self.fuse(self.encoder_res)
        self.Unimodality_Calculate()
        return self.encoder_res

    def Unimodality_Calculate(self):
        all_nums = len(self.encoder_res.keys()) - 1
        self.Uni_res = {}
        now_size = 0
        for modality in self.encoder_res:
            if modality == "output":
                self.Uni_res[modality] = self.encoder_res[modality]
                continue
            self.Uni_res[modality] = (
                torch.mm(
                    self.encoder_res[modality],
                    torch.transpose(
                        self.fusion_module.fc_out.weight[:, now_size : now_size + self.modality_size[modality]], 0, 1
                    ),
                )
                + self.fusion_module.fc_out.bias / all_nums
            )
            now_size += self.modality_size[modality]
        return self.Uni_res


def clip(a, b, c):
    if b < a:
        return a
    if c < b:
        return c
    return b


def bb_execute_drop(dim_list, p_exe, feat_list, q, model, mask, exe_draw):
    modality_list = list(model.modalitys)
    B = feat_list[modality_list[0]].shape[0]
    exe_drop = torch.tensor(exe_draw) >= 1 - p_exe  # np.random.rand(1), passed in
    if not exe_drop:
        return feat_list, torch.ones([B], dtype=torch.float32)
    d_sum = sum(dim_list.values())
    q_sum = sum(dim_list[m] * q[m] for m in modality_list)
    theta = q_sum / d_sum
    # q_temp = torch.tensor(q); mask = Bernoulli(1 - q_temp).sample([B, 1])...reshape(num_mod, B, -1): passed in
    cleaned = {}
    for idx, modality in enumerate(modality_list):
        D = feat_list[modality].shape[1]
        current_mask = mask[idx].expand(-1, D)
        cleaned_fea = torch.mul(feat_list[modality], current_mask)
        cleaned_fea = cleaned_fea / (1 - theta + 1e-5)
        cleaned[modality] = cleaned_fea
    mask = mask.squeeze(-1).transpose(0, 1)  # [B,num_mod]
    update_flag = torch.sum(mask, dim=1) > 0
    for modality in modality_list:
        cleaned[modality] = cleaned[modality][update_flag]
    return cleaned, update_flag


def official_bb_opm_step(model: BBModel, batch, label, cfg, mask, exe_draw) -> dict:
    softmax = nn.Softmax(dim=1)
    criterion = nn.CrossEntropyLoss()
    relu = nn.ReLU(inplace=True)
    tanh = nn.Tanh()
    model(batch)
    model.Unimodality_Calculate()
    loss = {}
    modality_list = model.modalitys
    modality_nums = len(modality_list)
    scores, ratios, coeffs = {}, {}, {}
    if cfg.modulation_starts <= cfg.current_epoch <= cfg.modulation_ends:
        for modality in modality_list:
            scores[modality] = sum(
                [softmax(model.Uni_res[modality])[i][label[i]] for i in range(model.Uni_res["output"].shape[0])]
            )
        for modality in modality_list:
            ratios[modality] = scores[modality]  # line 166: the same tensor object ...
            if modality_nums == 2:
                for modality_another in modality_list:
                    if modality_another == modality:
                        continue
                    ratios[modality] /= scores[modality_another] + 1e-5  # ... divided in place (line 172)
                    ratios[modality] = tanh(relu(ratios[modality] - 1))
            if modality_nums == 3:
                temp_score = 0.0
                for modality_another in modality_list:
                    if modality_another == modality:
                        continue
                    temp_score += scores[modality_another]
                ratios[modality] /= temp_score + 1e-5  # line 180
                ratios[modality] = tanh(relu(ratios[modality] - 1))
        for modality in modality_list:
            coeffs[modality] = cfg.q_base * (1 + cfg.alpha * ratios[modality]) if ratios[modality] > 0 else 0
            coeffs[modality] = clip(coeffs[modality], 0.0, 1.0)
        model.encoder_res.pop("output")
        cleaned_fea, update_flag = bb_execute_drop(
            model.modality_size, cfg.p_exe, model.encoder_res, coeffs, model, mask, exe_draw
        )
        model.Uni_res["output"] = model.fuse(cleaned_fea)
        select_mask = update_flag != 0
        label = label[select_mask]
        for modality in modality_list:
            model.Uni_res[modality] = model.Uni_res[modality][select_mask]
        for modality in model.Uni_res:
            loss[modality] = criterion(model.Uni_res[modality], label)
        loss["output"].backward()
    return {"q": {m: number(coeffs[m]) for m in coeffs}, "update_flag": update_flag}


def bb_scores(model: MultimodalClassifier, features, y) -> dict[str, torch.Tensor]:
    """Scores with gradient to the features and to the head (BalanceBenchmark detaches nothing)."""
    names = model.modalities
    weight, bias = model.fusion.head.weight, model.fusion.head.bias
    return {
        name: torch.softmax(features[name] @ weight[:, i * D : (i + 1) * D].T + bias / len(names), dim=1)
        .gather(1, y[:, None])
        .sum()
        for i, name in enumerate(names)
    }


@pytest.mark.parametrize("fires", [True, False])
@pytest.mark.parametrize(
    ("names", "dominant"),
    [
        (["audio", "visual"], "audio"),
        (["audio", "visual"], "visual"),
        (["audio", "visual", "text"], "audio"),
        (["audio", "visual", "text"], "text"),
    ],
)
def test_balancebenchmark_is_the_official_opm_step(names: list[str], dominant: str, fires: bool) -> None:
    model = build(names, seed=8)
    inputs, y = batch(model, seed=9, dominant=dominant)
    official = BBModel(model)
    kwargs = opm_preset("balancebenchmark", p_exe=1.0 if fires else 0.0, generator=torch.Generator().manual_seed(3))
    cfg = SimpleNamespace(q_base=0.4, alpha=0.5, p_exe=kwargs["p_exe"], modulation_starts=0, modulation_ends=80)
    cfg.current_epoch = 0

    opm = OPM(**kwargs)
    features = model.encode(inputs)
    dropped = opm(features, bb_scores(model, features, y), epoch=0)
    kept = kept_rows(dropped.features)
    kept_cross_entropy(model.fuse(dropped.features), y, dropped.keep).backward()

    mask = torch.stack([kept[n] for n in names]).double().unsqueeze(-1)  # [M, B, 1]
    result = official_bb_opm_step(official, inputs, y, cfg, mask, exe_draw=0.5)
    assert {n: float(q) for n, q in dropped.drop_probs.items()} == pytest.approx(result["q"], abs=TOL)
    assert torch.equal(dropped.keep, result["update_flag"].bool())
    theirs = grads({**{n: official.modality_encoder[n] for n in names}, "head": official.fusion_module.fc_out})
    assert_close(grads({**model.encoders, "head": model.fusion.head}), theirs)
    if fires and len(names) == 2:
        assert float(dropped.drop_probs[names[-1]]) > 0.5  # the last modality, whichever dominates


def bb_ogm_coeffs(Uni_res, label, modality_list, alpha) -> dict:
    """OGM_trainer.py lines 105-140 (two modalities)."""
    softmax = nn.Softmax(dim=1)
    relu = nn.ReLU(inplace=True)
    tanh = nn.Tanh()
    scores, ratios, coeffs = {}, {}, {}
    for modality in modality_list:
        score_modality = sum([softmax(Uni_res[modality])[i][label[i]] for i in range(Uni_res["output"].size(0))])
        scores[modality] = score_modality.detach().clone()
    for modality in modality_list:
        ratios[modality] = scores[modality].detach().clone()
        for modality_another in modality_list:
            if modality_another == modality:
                continue
            ratios[modality] /= scores[modality_another] + 1e-5  # line 132
    for modality in modality_list:
        if ratios[modality] > 1:
            coeffs[modality] = max(1 - tanh(alpha * relu(ratios[modality])), 0)
        else:
            coeffs[modality] = 1
    return coeffs


def official_bb_ogm_step(model: BBModel, batch, label, cfg) -> dict[str, float]:
    criterion = nn.CrossEntropyLoss()
    model(batch)
    Uni_res = model.Unimodality_Calculate()
    loss = criterion(Uni_res["output"], label)
    loss.backward()
    modality_list = model.modalitys
    coeffs = bb_ogm_coeffs(Uni_res, label, modality_list, cfg.alpha)
    # lines 142-152, the 'OGM' branch (OGM_GE adds N(0, (std + 1e-8)^2) noise to the same tensors)
    with torch.no_grad():
        if cfg.modulation_starts <= cfg.current_epoch <= cfg.modulation_ends:
            for name, parms in model.named_parameters():
                layer = str(name)
                for modality in modality_list:
                    if modality in layer and len(parms.grad.size()) != 1:
                        parms.grad *= coeffs[modality]
    return {m: number(c) for m, c in coeffs.items()}


def test_balancebenchmark_1e5_terms_where_scores_are_small() -> None:
    """True-class probabilities 3e-5 and 1e-5: the 1e-5 halves the ratio (3 -> 1.5), so it must be there."""
    probs = torch.tensor([[3e-5, 1 - 3e-5], [1e-5, 1 - 1e-5]], dtype=torch.float64)
    logits = {"audio": probs[:1].log(), "visual": probs[1:].log()}
    y = torch.tensor([0])
    ogm = OGM({"audio": nn.Linear(1, 1), "visual": nn.Linear(1, 1)}, alpha=0.3, **ogm_preset("balancebenchmark"))
    k = ogm.modulate(logits, y, epoch=10)
    theirs = bb_ogm_coeffs({**logits, "output": logits["audio"]}, y, ["audio", "visual"], alpha=0.3)
    assert k == pytest.approx({m: number(c) for m, c in theirs.items()}, rel=1e-4)
    assert ogm.last_ratios["audio"] == pytest.approx(1.5, rel=1e-3)

    scores = {"audio": torch.tensor(3e-5, dtype=torch.float64, requires_grad=True), "visual": torch.tensor(1e-5)}
    feats = {"audio": torch.ones(4, 2, dtype=torch.float64), "visual": torch.ones(4, 2, dtype=torch.float64)}
    q = OPM(**opm_preset("balancebenchmark"))(feats, scores, epoch=0).drop_probs
    assert float(q["audio"]) == pytest.approx(0.4 * (1 + 0.5 * math.tanh(0.5)), abs=1e-6)  # r = 1.5, not 3


@pytest.mark.parametrize("epoch", [9, 10, 80, 81])
@pytest.mark.parametrize("dominant", ["audio", "visual"])
def test_balancebenchmark_is_the_official_ogm_step(dominant: str, epoch: int) -> None:
    names = ["audio", "visual"]
    model = build(names, seed=10)
    inputs, y = batch(model, seed=11, dominant=dominant)
    official = BBModel(model)
    cfg = SimpleNamespace(alpha=0.3, modulation_starts=10, modulation_ends=80, current_epoch=epoch)
    coeffs = official_bb_ogm_step(official, inputs, y, cfg)

    ogm = OGM(model.modality_parameters(), alpha=0.3, **ogm_preset("balancebenchmark", noise=False))
    out = model(inputs)
    F.cross_entropy(out.logits, y).backward()
    k = ogm.modulate(out.unimodal_logits, y, epoch=epoch)
    if 10 <= epoch <= 80:
        assert k == pytest.approx(coeffs, abs=TOL)
    theirs = grads({**{n: official.modality_encoder[n] for n in names}, "head": official.fusion_module.fc_out})
    assert_close(grads({**model.encoders, "head": model.fusion.head}), theirs)


def test_balancebenchmark_aliasing_by_hand() -> None:
    """Scores (20, 10) and (10, 20): the last modality gets q ~ 0.6 either way (docs/methods.md)."""
    opm = OPM(**opm_preset("balancebenchmark", p_exe=0.0))
    feats = {"audio": torch.ones(2, 3), "visual": torch.ones(2, 3)}
    first = opm(feats, {"audio": torch.tensor(20.0, requires_grad=True), "visual": torch.tensor(10.0)})
    # r_a = 20 / (10 + 1e-5) ~ 2, then r_v = 10 / (r_a + 1e-5) ~ 5: both dominant
    q_a = 0.4 * (1 + 0.5 * torch.tanh(torch.tensor(20 / (10 + 1e-5) - 1)))
    q_v = 0.4 * (1 + 0.5 * torch.tanh(torch.tensor(10 / (20 / (10 + 1e-5) + 1e-5) - 1)))
    assert float(first.drop_probs["audio"]) == pytest.approx(float(q_a), abs=1e-6)
    assert float(first.drop_probs["visual"]) == pytest.approx(float(q_v), abs=1e-6)
    second = opm(feats, {"audio": torch.tensor(10.0, requires_grad=True), "visual": torch.tensor(20.0)})
    # r_a = 0.5: not dominant; r_v = 20 / 0.5 = 40
    assert float(second.drop_probs["audio"]) == 0.0
    assert float(second.drop_probs["visual"]) == pytest.approx(0.4 * (1 + 0.5 * float(torch.tanh(torch.tensor(39.0)))))
