"""OGM / OGM-GE: exact gradient scaling, GE noise statistics, windows, accumulation, AMP, errors."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modbalance import OGM, discrepancy_ratios, ogm_coefficients, unimodal_scores


def two_encoders(seed: int = 0) -> tuple[nn.Module, nn.Module, nn.Linear]:
    torch.manual_seed(seed)
    audio = nn.Sequential(nn.Conv1d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6, 5))
    visual = nn.Sequential(nn.Linear(8, 5))
    head = nn.Linear(10, 3)
    return audio, visual, head


def step_inputs(seed: int = 0, batch: int = 16):
    g = torch.Generator().manual_seed(seed)
    xa = torch.randn(batch, 1, 8, generator=g)
    xv = torch.randn(batch, 8, generator=g)
    y = torch.randint(0, 3, (batch,), generator=g)
    return xa, xv, y


def forward_backward(audio, visual, head, xa, xv, y, audio_gain=4.0):
    fa, fv = audio(xa) * audio_gain, visual(xv)
    logits = head(torch.cat([fa, fv], 1))
    F.cross_entropy(logits, y).backward()
    w, b = head.weight.detach(), head.bias.detach()
    uni = {"audio": fa.detach() @ w[:, :5].T + b / 2, "visual": fv.detach() @ w[:, 5:].T + b / 2}
    return uni


@pytest.mark.parametrize("coefficient", ["reference", "shifted", "paper"])
def test_gradients_scaled_by_exactly_k_on_mapped_parameters_only(coefficient):
    audio, visual, head = two_encoders()
    xa, xv, y = step_inputs()
    uni = forward_backward(audio, visual, head, xa, xv, y)
    before = {
        n: p.grad.clone()
        for n, p in [
            *audio.named_parameters(prefix="a"),
            *visual.named_parameters(prefix="v"),
            *head.named_parameters(prefix="h"),
        ]
    }
    ogm = OGM({"audio": audio, "visual": visual}, alpha=0.5, coefficient=coefficient)
    k = ogm.modulate(uni, y)
    expected = ogm_coefficients(discrepancy_ratios(unimodal_scores(uni, y)), 0.5, coefficient)
    assert k == pytest.approx({m: v.item() for m, v in expected.items()})
    dominant = max(k, key=lambda m: abs(1 - k[m]))
    assert k[dominant] < 1.0
    for name, p in audio.named_parameters(prefix="a"):
        assert torch.equal(p.grad, before[name] * k["audio"]), name
    for name, p in visual.named_parameters(prefix="v"):
        assert torch.equal(p.grad, before[name] * k["visual"]), name
    for name, p in head.named_parameters(prefix="h"):
        assert torch.equal(p.grad, before[name]), name  # the fusion head is never touched


def test_conv_filter_touches_only_4d_kernels():
    conv = nn.Conv2d(1, 2, 3)
    lin = nn.Linear(3, 3)
    other = nn.Conv2d(1, 2, 3)
    for p in [*conv.parameters(), *lin.parameters(), *other.parameters()]:
        p.grad = torch.ones_like(p)
    ogm = OGM({"audio": [*conv.parameters(), *lin.parameters()], "visual": other}, alpha=1.0, param_filter="conv")
    uni = {"audio": torch.tensor([[5.0, 0.0]]), "visual": torch.tensor([[0.0, 0.0]])}
    k = ogm.modulate(uni, torch.tensor([0]))
    assert k["audio"] < 1
    assert torch.allclose(conv.weight.grad, torch.full_like(conv.weight, k["audio"]))
    assert torch.equal(conv.bias.grad, torch.ones(2))
    assert torch.equal(lin.weight.grad, torch.ones(3, 3))


def test_ge_noise_has_the_documented_standard_deviation():
    # One big gradient tensor per modality so the empirical std is sharp.
    pa, pv = nn.Parameter(torch.zeros(200_000)), nn.Parameter(torch.zeros(200_000))
    g = torch.Generator().manual_seed(3)
    ga = torch.randn(200_000, generator=g) * 0.3 + 0.1
    gv = torch.randn(200_000, generator=g) * 2.0
    pa.grad, pv.grad = ga.clone(), gv.clone()
    ogm = OGM({"audio": [pa], "visual": [pv]}, alpha=0.8, noise=True, generator=torch.Generator().manual_seed(0))
    uni = {"audio": torch.tensor([[4.0, 0.0]]), "visual": torch.tensor([[0.0, 0.0]])}
    k = ogm.modulate(uni, torch.tensor([0]))
    assert k["visual"] == 1.0 and k["audio"] < 1
    noise_a = pa.grad - k["audio"] * ga
    noise_v = pv.grad - gv  # noise is added with k = 1 too
    # sigma = unbiased std of the un-modulated gradient (+1e-8); sample std of 2e5 normals is within 1%.
    assert noise_a.std().item() == pytest.approx(ga.std().item(), rel=0.01)
    assert noise_v.std().item() == pytest.approx(gv.std().item(), rel=0.01)
    assert abs(noise_a.mean().item()) < 5 * ga.std().item() / math.sqrt(2e5)
    assert abs(torch.corrcoef(torch.stack([noise_a, ga]))[0, 1].item()) < 0.02


def test_noise_stream_is_reproducible_and_state_dict_round_trips():
    def run(ogm, steps):
        grads = []
        for _ in range(steps):
            p, q = nn.Parameter(torch.zeros(10)), nn.Parameter(torch.zeros(10))
            p.grad, q.grad = torch.ones(10), torch.arange(10.0)
            ogm.groups = {"audio": [p], "visual": [q]}
            ogm.modulate({"audio": torch.tensor([[2.0, 0.0]]), "visual": torch.tensor([[0.0, 0.0]])}, torch.tensor([0]))
            grads.append(q.grad.clone())
        return grads

    make = lambda: OGM(
        {"audio": [nn.Parameter(torch.zeros(1))], "visual": [nn.Parameter(torch.zeros(1))]},
        0.5,
        noise=True,
        generator=torch.Generator().manual_seed(7),
    )
    reference = run(make(), 4)
    first = make()
    run(first, 2)
    state = first.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(run(resumed, 2), reference[2:]))
    assert not torch.equal(reference[0], reference[1])


def test_window_and_grads_untouched_outside_it():
    p, q = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(3))
    ogm = OGM({"audio": [p], "visual": [q]}, alpha=1.0, noise=True, start_epoch=2, end_epoch=4)
    uni = {"audio": torch.tensor([[5.0, 0.0]]), "visual": torch.tensor([[0.0, 0.0]])}
    for epoch, active in [(1, False), (2, True), (4, True), (5, False)]:
        p.grad, q.grad = torch.ones(3), torch.ones(3)
        k = ogm.modulate(uni, torch.tensor([0]), epoch=epoch)
        assert (k["audio"] < 1) == active
        assert torch.equal(p.grad, torch.ones(3)) == (not active)


def test_gradient_accumulation_uses_summed_scores_and_modulates_once():
    p, q = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    g = torch.Generator().manual_seed(5)
    za, zv = torch.randn(8, 4, generator=g) * 3, torch.randn(8, 4, generator=g)
    y = torch.randint(0, 4, (8,), generator=g)
    whole = OGM({"audio": [p], "visual": [q]}, alpha=0.7)
    p.grad, q.grad = torch.ones(2), torch.ones(2)
    k_whole = whole.modulate({"audio": za, "visual": zv}, y)
    grads_whole = (p.grad.clone(), q.grad.clone())
    micro = OGM({"audio": [p], "visual": [q]}, alpha=0.7)
    p.grad, q.grad = torch.ones(2), torch.ones(2)
    micro.accumulate({"audio": za[:3], "visual": zv[:3]}, y[:3])
    micro.accumulate({"audio": za[3:5], "visual": zv[3:5]}, y[3:5])
    assert torch.equal(p.grad, torch.ones(2))  # accumulate never touches gradients
    k_micro = micro.modulate({"audio": za[5:], "visual": zv[5:]}, y[5:])
    assert k_micro == pytest.approx(k_whole, rel=1e-6)
    assert torch.allclose(p.grad, grads_whole[0]) and torch.allclose(q.grad, grads_whole[1])
    with pytest.raises(ValueError, match="needs unimodal_logits"):
        micro.modulate()


def test_amp_scaler_path_modulates_unscaled_gradients():
    audio, visual, head = two_encoders()
    xa, xv, y = step_inputs()
    params = [*audio.parameters(), *visual.parameters(), *head.parameters()]

    # Plain fp32 reference.
    uni = forward_backward(audio, visual, head, xa, xv, y)
    OGM({"audio": audio, "visual": visual}, alpha=0.5).modulate(uni, y)
    expected = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None

    # Scaled loss; OGM unscales through the scaler before modulating.
    optimizer = torch.optim.SGD(params, lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    fa, fv = audio(xa) * 4.0, visual(xv)
    scaler.scale(F.cross_entropy(head(torch.cat([fa, fv], 1)), y)).backward()
    assert not torch.allclose(params[0].grad, expected[0])  # still scaled
    OGM({"audio": audio, "visual": visual}, alpha=0.5).modulate(uni, y, scaler=scaler, optimizer=optimizer)
    for got, want in zip([p.grad for p in params], expected):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)
    scaler.step(optimizer)
    scaler.update()
    with pytest.raises(ValueError, match="needs optimizer"):
        OGM({"audio": audio, "visual": visual}, alpha=0.5).modulate(uni, y, scaler=scaler)


def test_warns_once_for_adaptive_optimizers():
    p, q = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    ogm = OGM({"audio": [p], "visual": [q]}, alpha=0.5)
    uni, y = {"audio": torch.tensor([[1.0, 0.0]]), "visual": torch.tensor([[0.0, 0.0]])}, torch.tensor([0])
    adam = torch.optim.Adam([p, q])
    with pytest.warns(UserWarning, match="Adam"):
        ogm.modulate(uni, y, optimizer=adam)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ogm.modulate(uni, y, optimizer=adam)  # only once
        OGM({"audio": [p], "visual": [q]}, alpha=0.5).modulate(uni, y, optimizer=torch.optim.SGD([p, q], lr=0.1))


@pytest.mark.parametrize("num_modalities", [2, 3, 4])
def test_many_modalities(num_modalities):
    params = {f"m{i}": [nn.Parameter(torch.zeros(3))] for i in range(num_modalities)}
    for group in params.values():
        group[0].grad = torch.ones(3)
    strengths = torch.linspace(3.0, 0.0, num_modalities)
    uni = {name: torch.tensor([[s.item(), 0.0]]) for name, s in zip(params, strengths)}
    ogm = OGM(params, alpha=0.5)
    k = ogm.modulate(uni, torch.tensor([0]))
    ratios = discrepancy_ratios(unimodal_scores(uni, torch.tensor([0])))
    for name in params:
        assert torch.allclose(params[name][0].grad, torch.full((3,), k[name]))
        assert (k[name] < 1) == (ratios[name].item() > 1)
    assert k[f"m{num_modalities - 1}"] == 1.0  # the weakest is never modulated


def test_errors():
    p, q = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="at least two modalities"):
        OGM({"audio": [p]}, alpha=0.5)
    with pytest.raises(ValueError, match="'visual' has no trainable parameter"):
        OGM({"audio": [p], "visual": []}, alpha=0.5)
    frozen = nn.Parameter(torch.zeros(2), requires_grad=False)
    with pytest.raises(ValueError, match="'visual' has no trainable parameter"):
        OGM({"audio": [p], "visual": [frozen]}, alpha=0.5)
    with pytest.raises(ValueError, match=r"no trainable parameter .*'conv'"):
        OGM({"audio": nn.Conv2d(1, 1, 1), "visual": nn.Linear(2, 2)}, alpha=0.5, param_filter="conv")
    with pytest.raises(ValueError, match="mapped to both"):
        OGM({"audio": [p], "visual": [p, q]}, alpha=0.5)
    with pytest.raises(ValueError, match="alpha"):
        OGM({"audio": [p], "visual": [q]}, alpha=-1)
    with pytest.raises(ValueError, match="Unknown OGM coefficient"):
        OGM({"audio": [p], "visual": [q]}, alpha=1, coefficient="k4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="start_epoch"):
        OGM({"audio": [p], "visual": [q]}, alpha=1, start_epoch=5, end_epoch=2)
    ogm = OGM({"audio": [p], "visual": [q]}, alpha=1)
    y = torch.tensor([0])
    with pytest.raises(ValueError, match=r"keys \['audio', 'text'\] do not match"):
        ogm.modulate({"audio": torch.zeros(1, 2), "text": torch.zeros(1, 2)}, y)
    with pytest.raises(ValueError, match="outside"):
        ogm.modulate({"audio": torch.zeros(1, 2), "visual": torch.zeros(1, 2)}, torch.tensor([7]))
    with pytest.raises(ValueError, match=r"non-finite .*\['audio'\]"):
        ogm.modulate({"audio": torch.full((1, 2), float("inf")), "visual": torch.zeros(1, 2)}, y)
    # A batch whose scores are all zero (underflowed softmax): documented rule, nothing modulated.
    p.grad, q.grad = torch.ones(2), torch.ones(2)
    k = ogm.modulate({"audio": torch.tensor([[-1e4, 0.0]]), "visual": torch.tensor([[-1e4, 0.0]])}, y)
    assert k == {"audio": 1.0, "visual": 1.0} and torch.equal(p.grad, torch.ones(2))


def _one_step(space, optimizer_cls, **opt_kwargs):
    """One optimizer step; returns k and each module's parameter change."""
    audio, visual, head = two_encoders()
    modules = {"audio": audio, "visual": visual, "head": head}
    before = {name: [p.detach().clone() for p in m.parameters()] for name, m in modules.items()}
    optimizer = optimizer_cls([p for m in modules.values() for p in m.parameters()], **opt_kwargs)
    xa, xv, y = step_inputs()
    uni = forward_backward(audio, visual, head, xa, xv, y)
    k = {}
    if space is not None:
        k = OGM({"audio": audio, "visual": visual}, alpha=0.5, space=space).modulate(uni, y, optimizer=optimizer)
    optimizer.step()
    return k, {name: [p.detach() - b for p, b in zip(m.parameters(), before[name])] for name, m in modules.items()}


def test_update_space_equals_gradient_space_for_plain_sgd():
    k_grad, grad = _one_step("gradient", torch.optim.SGD, lr=0.1)
    k_upd, upd = _one_step("update", torch.optim.SGD, lr=0.1)
    assert k_grad == k_upd and min(k_grad.values()) < 1
    for name in grad:
        for a, b in zip(grad[name], upd[name]):
            assert torch.allclose(a, b, atol=1e-7), name


def test_update_space_survives_adam_where_gradient_space_cancels():
    _, plain = _one_step(None, torch.optim.Adam, lr=0.01)
    with pytest.warns(UserWarning, match="Adam"):
        k_grad, grad = _one_step("gradient", torch.optim.Adam, lr=0.01)
    k, upd = _one_step("update", torch.optim.Adam, lr=0.01)
    dominant = min(k, key=k.get)
    other = "audio" if dominant == "visual" else "visual"
    assert k == k_grad and k[dominant] < 0.9 and k[other] == 1.0
    # Adam's first update is about lr * sign(g): a gradient scale k leaves it (nearly) unchanged ...
    for a, b in zip(plain[dominant], grad[dominant]):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-6)
    # ... while update space scales the dominant modality's update by exactly k, and nothing else.
    for a, b in zip(plain[dominant], upd[dominant]):
        assert torch.allclose(b, k[dominant] * a, atol=1e-7)
    for name in (other, "head"):
        for a, b in zip(plain[name], upd[name]):
            assert torch.allclose(a, b, atol=1e-7), name


def test_update_space_needs_the_optimizer():
    p, q = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    ogm = OGM({"audio": [p], "visual": [q]}, alpha=0.5, space="update")
    with pytest.raises(ValueError, match="needs modulate"):
        ogm.modulate({"audio": torch.tensor([[2.0, 0.0]]), "visual": torch.zeros(1, 2)}, torch.tensor([0]))
    with pytest.raises(ValueError, match="space must be"):
        OGM({"audio": [p], "visual": [q]}, alpha=0.5, space="param")
