"""OGM-GE noise: per-tensor scale, reproducibility, thread independence, resume, reused buffer.

Oracle for the scale: ``torch.std`` (PyTorch's unbiased std) of each un-modulated gradient
tensor, as in the official code (GeWu-Lab/OGM-GE_CVPR2022, main.py, the GE branch:
``std = parms.grad.std().item()``, noise ``N(0, std + 1e-8)`` added after the scaling).
"""

import math

import pytest
import torch
from torch import nn

from modbalance import OGM
from modbalance.ogm import NOISE_STREAMS, _sigmas

# (shape, mean, std): sizes from a ResNet-like layer mix, means from 0 to 30 sigma.
SPECS = [
    ((256, 128, 3, 3), 0.0, 0.02),
    ((512, 256), 0.05, 0.3),
    ((200_000,), 3.0, 0.1),  # mean-dominated (30 sigma): the cancellation guard
    ((64, 64, 7, 3), -0.01, 2.0),
    ((100_001,), 0.0, 1e-4),
]


def make_grads(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) * std + mean for shape, mean, std in SPECS]


def modulate(ogm: OGM, grads: list[torch.Tensor], params: list[nn.Parameter], weak: bool = True) -> dict:
    for p, g in zip(params, grads):
        p.grad = g.clone()
    # audio dominant -> k_audio < 1, visual k = 1; both get noise.
    uni = {"audio": torch.tensor([[4.0, 0.0]]), "visual": torch.tensor([[0.0, 0.0]])}
    return ogm.modulate(uni, torch.tensor([0]))


def setup(seed: int = 0, **kwargs):
    params = [nn.Parameter(torch.zeros(shape)) for shape, _, _ in SPECS]
    groups = {"audio": params[:2], "visual": params[2:]}
    ogm = OGM(groups, alpha=0.8, noise=True, generator=torch.Generator().manual_seed(seed), **kwargs)
    return ogm, params


def noises(ogm, params, grads) -> list[torch.Tensor]:
    k = modulate(ogm, grads, params)
    scales = [k["audio"]] * 2 + [k["visual"]] * 3
    return [p.grad - s * g for p, g, s in zip(params, grads, scales)]


def test_noise_std_matches_each_tensors_unmodulated_std_within_one_percent():
    ogm, params = setup()
    grads = make_grads()
    for noise, g in zip(noises(ogm, params, grads), grads):
        # sample std of >= 1e5 normals is within 1% (about 5 standard errors of 0.22%)
        assert noise.std().item() == pytest.approx(g.std().item(), rel=0.01)
        assert abs(noise.mean().item()) < 5 * g.std().item() / math.sqrt(g.numel())


def test_many_small_tensors_each_get_their_own_scale():
    # 300 tensors of 200 elements with stds over four decades: noise / std(g) pooled is N(0, 1).
    g = torch.Generator().manual_seed(1)
    stds = torch.logspace(-4, 0, 300)
    grads = [torch.randn(200, generator=g) * s + 0.5 * s for s in stds]
    params = [nn.Parameter(torch.zeros(200)) for _ in grads]
    ogm = OGM({"audio": params[:150], "visual": params[150:]}, alpha=0.0, noise=True, generator=torch.Generator())
    for p, grad in zip(params, grads):
        p.grad = grad.clone()
    ogm.modulate({"audio": torch.tensor([[1.0, 0.0]]), "visual": torch.tensor([[0.0, 1.0]])}, torch.tensor([0]))
    pooled = torch.cat([(p.grad - grad) / grad.std() for p, grad in zip(params, grads)])
    assert pooled.std().item() == pytest.approx(1.0, rel=0.01)


def test_grouped_sigma_equals_torch_std():
    grads = [*make_grads(2), torch.full((5, 5), 7.0), torch.tensor([3.0]), torch.ones(10) * 1e3, torch.randn(4)]
    sigmas = _sigmas(grads)
    for g, s in zip(grads, sigmas.tolist()):
        exact = g.std().item() if g.numel() > 1 else 0.0
        if s < 0:  # mean-dominated: recomputed exactly by the draw
            assert (g.mean() ** 2).item() > 100 * g.var().item()
        else:
            assert s == pytest.approx(exact, rel=1e-4, abs=1e-12)
    assert sigmas[3].item() > 0 and sigmas[6].item() == 0.0  # one element: sigma 0
    assert sigmas[5].item() == sigmas[7].item() == -1.0  # constant tensors: exact std (0) at draw time


def test_same_seed_same_noise_and_thread_count_does_not_matter():
    grads = make_grads()
    reference = noises(*setup(seed=5), grads)
    for threads in (1, 2, NOISE_STREAMS + 1):
        ogm, params = setup(seed=5)
        ogm.noise_threads = threads
        assert all(torch.equal(a, b) for a, b in zip(noises(ogm, params, grads), reference))
    other = noises(*setup(seed=6), grads)
    assert not torch.equal(other[0], reference[0])


def test_resume_continues_the_stream_exactly_and_the_buffer_is_reused():
    grads = make_grads()
    ogm, params = setup(seed=9)
    straight = [noises(ogm, params, grads) for _ in range(3)]
    first, params1 = setup(seed=9)
    noises(first, params1, grads)
    pointer = first._noise_buffers[torch.device("cpu")].data_ptr()
    resumed, params2 = setup(seed=123)
    resumed.load_state_dict(first.state_dict())
    for expected in straight[1:]:
        assert all(torch.equal(a, b) for a, b in zip(noises(resumed, params2, grads), expected))
    noises(first, params1, grads)
    assert first._noise_buffers[torch.device("cpu")].data_ptr() == pointer  # no new buffer per step
    assert "buffer" not in str(first.state_dict().keys())
    assert not torch.equal(straight[0][0], straight[1][0])  # a new draw every step


def test_half_precision_and_non_finite_gradients():
    p, q = nn.Parameter(torch.zeros(1000, dtype=torch.float16)), nn.Parameter(torch.zeros(1000))
    ogm = OGM({"audio": [p], "visual": [q]}, alpha=0.5, noise=True, generator=torch.Generator().manual_seed(0))
    ga = torch.randn(1000, generator=torch.Generator().manual_seed(1)).half()
    p.grad, q.grad = ga.clone(), torch.full((1000,), float("nan"))
    k = ogm.modulate({"audio": torch.tensor([[2.0, 0.0]]), "visual": torch.tensor([[0.0, 0.0]])}, torch.tensor([0]))
    assert p.grad.dtype == torch.float16
    assert (p.grad.float() - k["audio"] * ga.float()).std().item() == pytest.approx(ga.float().std().item(), rel=0.1)
    assert torch.isnan(q.grad).all()  # NaN in, NaN out (no exception), as torch.std would give
