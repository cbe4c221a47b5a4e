"""The seams of the interaction models: forward/backward, uni-modal logits, OGM groups, OPM as a mask.

Oracles come from outside the code under test: the same model run without the dropped modality
at all (a modality that is masked out must be indistinguishable from one that was never given),
hand-made gradients multiplied by a coefficient read back from OGM, binomial bounds on the drop
rate with OPM's documented ``q`` (:func:`modbalance.opm_drop_probs`).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modbalance import OGM, OPM, opm_drop_probs, unimodal_scores
from modbalance.interaction import CentralNet, InteractionModel, MMTMNet, Tokens, TransformerFusion

NAMES = ["audio", "visual", "text", "depth"]
WIDTHS = {"audio": 5, "visual": 3, "text": 4, "depth": 2}
LENGTHS = {"audio": 4, "visual": 3, "text": 5, "depth": 2}
ARCHS = ["joint", "bottleneck", "mmtm", "centralnet"]


def make(arch: str, m: int, **options: object) -> InteractionModel:
    names = NAMES[:m]
    if arch in ("joint", "bottleneck"):
        return TransformerFusion(
            {n: WIDTHS[n] for n in names},
            num_classes=3,
            d_model=8,
            depth=2,
            heads=2,
            variant=arch,
            fusion_tokens=2,
            modality_depth=1,
            max_tokens=8,
            **options,  # type: ignore[arg-type]
        )

    def layers(n: str) -> list[nn.Module]:
        return [nn.Sequential(nn.Linear(WIDTHS[n], 6), nn.Tanh()), nn.Sequential(nn.Linear(6, 4), nn.Tanh())]

    if arch == "mmtm":
        return MMTMNet({n: layers(n) for n in names}, {n: [6, 4] for n in names}, 3, ratio=2, **options)  # type: ignore[arg-type]
    return CentralNet({n: layers(n) for n in names}, [6, 4], 3, **options)  # type: ignore[arg-type]


def inputs(arch: str, m: int, batch: int = 6) -> dict[str, torch.Tensor]:
    if arch in ("joint", "bottleneck"):
        return {n: torch.randn(batch, LENGTHS[n], WIDTHS[n]) for n in NAMES[:m]}
    return {n: torch.randn(batch, WIDTHS[n]) for n in NAMES[:m]}


def dominant_opm(q: float = 1.0) -> OPM:
    """An OPM that fires on every step; with the scores below it drops 'audio' with probability q."""
    return OPM(q_base=q, lam=0.0, p_exe=1.0, rescale="none", generator=torch.Generator().manual_seed(1))


def audio_dominant_scores(names: list[str]) -> dict[str, torch.Tensor]:
    return {n: torch.tensor(8.0 if n == "audio" else 1.0) for n in names}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("m", [2, 3, 4])
def test_forward_backward(arch: str, m: int) -> None:
    model = make(arch, m)
    x, y = inputs(arch, m), torch.randint(0, 3, (6,))
    out = model(x, opm=OPM(p_exe=1.0), scores=lambda z: unimodal_scores(z, y))
    assert out.logits.shape == (6, 3) and out.keep.shape == (6,)
    assert sorted(out.unimodal_logits) == sorted(NAMES[:m])
    assert all(z.shape == (6, 3) and not z.requires_grad for z in out.unimodal_logits.values())
    F.cross_entropy(out.logits, y).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("m", [2, 3])
def test_unimodal_logits_depend_on_own_input_only(arch: str, m: int) -> None:
    model = make(arch, m)
    x = inputs(arch, m)
    base = model(x).unimodal_logits
    for changed in NAMES[:m]:
        other = dict(x, **{changed: torch.randn_like(x[changed])})
        after = model(other).unimodal_logits
        for name in NAMES[:m]:
            if name == changed:
                assert not torch.allclose(after[name], base[name])
            else:
                assert torch.equal(after[name], base[name]), (changed, name)


@pytest.mark.parametrize("arch", ARCHS)
def test_unimodal_logits_equal_the_model_with_the_others_masked(arch: str) -> None:
    """Exactness: m alone equals the full model where every other modality's factor is 0."""
    model = make(arch, 3)
    x = inputs(arch, 3)
    out = model(x)
    state, _ = model._prepare(model.check_inputs(x))
    for j, name in enumerate(model.modalities):
        weight = torch.zeros(6, 3)
        weight[:, j] = 1.0
        masked, _ = model._interact(state, model.modalities, weight)
        torch.testing.assert_close(out.unimodal_logits[name], masked.detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_dropped_modality_gets_zero_gradient_and_leaves_the_others_unchanged(arch: str) -> None:
    model = make(arch, 3)
    x = {n: v.requires_grad_() for n, v in inputs(arch, 3).items()}
    scores = audio_dominant_scores(model.modalities)
    out = model(x, opm=dominant_opm(1.0), scores=scores)
    out.logits.sum().backward()
    assert x["audio"].grad is not None and torch.count_nonzero(x["audio"].grad) == 0
    assert all(torch.count_nonzero(x[n].grad) > 0 for n in ("visual", "text"))  # type: ignore[arg-type]
    # Changing the dropped modality's input changes nothing (bitwise) ...
    other = dict(x, audio=torch.randn_like(x["audio"]))
    again = model(other, opm=dominant_opm(1.0), scores=scores)
    assert torch.equal(again.logits, out.logits)
    # ... and the model equals the same model that never saw the modality.
    state, _ = model._prepare(model.check_inputs(x))
    without, reps = model._interact(state, ["visual", "text"], torch.ones(6, 2))
    torch.testing.assert_close(out.logits, without, atol=1e-5, rtol=1e-5)
    if arch in ("joint", "bottleneck"):  # the other tokens' attention output, token by token
        _, reps_dropped = model._interact(state, model.modalities, torch.tensor([[0.0, 1.0, 1.0]]).expand(6, 3))
        for name in ("visual", "text"):
            torch.testing.assert_close(reps_dropped[name], reps[name], atol=1e-5, rtol=1e-5)


def test_dropped_tokens_take_no_part_in_attention() -> None:
    """A query's attention output does not move when a masked key's value changes (bitwise)."""
    model = make("joint", 2)
    x = inputs("joint", 2)
    state, _ = model._prepare(model.check_inputs(x))
    weight = torch.tensor([[0.0, 1.0]]).expand(6, 2)
    _, reps = model._interact(state, model.modalities, weight)
    moved = dict(state, audio=(state["audio"][0] * 100.0 + 3.0, state["audio"][1]))
    _, reps_moved = model._interact(moved, model.modalities, weight)
    assert torch.equal(reps["visual"], reps_moved["visual"])


@pytest.mark.parametrize("arch", ARCHS)
def test_every_modality_dropped_follows_the_documented_rule(arch: str) -> None:
    """No modality left: the logits come from the shared part only (finite, the same for every input)."""
    model = make(arch, 2)
    x = inputs(arch, 2)
    state, _ = model._prepare(model.check_inputs(x))
    logits, _ = model._interact(state, model.modalities, torch.zeros(6, 2))
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits, logits[:1].expand_as(logits))


@pytest.mark.parametrize("arch", ARCHS)
def test_opm_drop_rate_within_binomial_bounds(arch: str) -> None:
    model = make(arch, 2)
    n, q_base = 2000, 0.5
    x = {k: v.requires_grad_() for k, v in inputs(arch, 2, batch=n).items()}
    scores = {"audio": torch.tensor(3.0), "visual": torch.tensor(1.0)}
    q = float(opm_drop_probs(scores, q_base, 0.5)["audio"])
    opm = OPM(q_base=q_base, lam=0.5, p_exe=1.0, generator=torch.Generator().manual_seed(3))
    out = model(x, opm=opm, scores=scores)
    out.logits.sum().backward()
    assert x["audio"].grad is not None
    dropped = (x["audio"].grad.flatten(1) == 0).all(dim=1).float().mean().item()
    assert abs(dropped - q) <= 4 * math.sqrt(q * (1 - q) / n), (dropped, q)
    assert (x["visual"].grad.flatten(1) != 0).any(dim=1).all()  # type: ignore[union-attr]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("shared", [None, "audio"])
def test_ogm_scales_exactly_the_mapped_parameters(arch: str, shared: str | None) -> None:
    model = make(arch, 3, ogm_shared=shared)
    x, y = inputs(arch, 3), torch.randint(0, 3, (6,))
    out = model(x)
    F.cross_entropy(out.logits, y).backward()
    before = {id(p): p.grad.clone() for p in model.parameters() if p.grad is not None}
    groups = model.modality_parameters()
    ogm = OGM(groups, alpha=1.0)
    # make audio dominant: its uni-modal logits put all mass on the true class
    logits = {n: torch.zeros(6, 3) for n in model.modalities}
    logits["audio"] = F.one_hot(y, 3).float() * 10
    k = ogm.modulate(logits, y)
    assert k["audio"] < 1.0 and k["visual"] == k["text"] == 1.0
    owner = {id(p): name for name, params in groups.items() for p in params}
    shared_ids = {id(p) for p in model.shared_parameters()}
    assert shared_ids and shared_ids.isdisjoint({id(p) for p in groups["visual"]} | {id(p) for p in groups["text"]})
    for p in model.parameters():
        if p.grad is None:
            continue
        if id(p) in owner:
            expected = before[id(p)] * torch.tensor(k[owner[id(p)]], dtype=p.grad.dtype)
            assert torch.equal(p.grad, expected)
        else:  # shared and not mapped: bitwise untouched
            assert shared is None and id(p) in shared_ids
            assert torch.equal(p.grad, before[id(p)])
    if shared == "audio":
        assert shared_ids <= {id(p) for p in groups["audio"]}


def test_ogm_refuses_overlapping_groups_naming_the_modalities_and_shape() -> None:
    model = make("joint", 2)
    groups = model.modality_parameters()
    groups["visual"] = groups["visual"] + [model.proj["audio"].weight]
    with pytest.raises(ValueError, match=r"shape \(8, 5\) is mapped to both 'audio' and 'visual'"):
        OGM(groups, alpha=1.0)


@pytest.mark.parametrize("arch", ARCHS)
def test_bad_inputs_name_the_modality_and_shapes(arch: str) -> None:
    model = make(arch, 2)
    x = inputs(arch, 2)
    with pytest.raises(ValueError, match=r"missing \['visual'\]"):
        model({"audio": x["audio"]})
    with pytest.raises(ValueError, match=r"inputs\['visual'\] has batch size 4 \(shape \(4, "):
        model(dict(x, visual=x["visual"][:4]))


def test_transformer_token_widths_and_lengths_are_checked() -> None:
    model = make("joint", 2)
    x = inputs("joint", 2)
    with pytest.raises(ValueError, match=r"inputs\['visual'\] must be tokens of shape \(B, T, 3\), got \(6, 3, 7\)"):
        model(dict(x, visual=torch.randn(6, 3, 7)))
    with pytest.raises(ValueError, match=r"inputs\['audio'\] has 9 tokens .* max_tokens=8"):
        model(dict(x, audio=torch.randn(6, 9, 5)))
    with pytest.raises(ValueError, match=r"valid must be a bool \(B, T\) mask"):
        model(dict(x, audio=Tokens(x["audio"], torch.ones(6, 3, dtype=torch.bool))))


@pytest.mark.parametrize("variant", ["joint", "bottleneck"])
def test_padding_tokens_are_ignored(variant: str) -> None:
    """A padded sequence gives the same output as the unpadded one (masks, not loops)."""
    model = make(variant, 2).eval()
    x = inputs(variant, 2, batch=1)
    padded = torch.cat([x["audio"], torch.randn(1, 3, 5) * 50], dim=1)
    valid = torch.tensor([[True] * 4 + [False] * 3])
    a = model(x)
    b = model(dict(x, audio=Tokens(padded, valid)))
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.unimodal_logits["audio"], b.unimodal_logits["audio"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.features["audio"], b.features["audio"], atol=1e-5, rtol=1e-5)


def test_bottleneck_routes_cross_modal_information_through_fusion_tokens_only() -> None:
    """With no shared fusion token but CLS, after one block a modality's tokens have not seen the other."""
    model = TransformerFusion(
        {"audio": 5, "visual": 3}, 3, d_model=8, depth=1, heads=2, variant="bottleneck", fusion_tokens=0, max_tokens=8
    )
    x = inputs("bottleneck", 2)
    state, _ = model._prepare(model.check_inputs(x))
    _, reps = model._interact(state, model.modalities, torch.ones(6, 2))
    moved = dict(state, visual=(state["visual"][0] + 1.0, state["visual"][1]))
    _, reps_moved = model._interact(moved, model.modalities, torch.ones(6, 2))
    assert torch.equal(reps["audio"], reps_moved["audio"])
    joint = TransformerFusion({"audio": 5, "visual": 3}, 3, d_model=8, depth=1, heads=2, variant="joint", max_tokens=8)
    state, _ = joint._prepare(joint.check_inputs(x))
    _, reps = joint._interact(state, joint.modalities, torch.ones(6, 2))
    moved = dict(state, visual=(state["visual"][0] + 1.0, state["visual"][1]))
    _, reps_moved = joint._interact(moved, joint.modalities, torch.ones(6, 2))
    assert not torch.equal(reps["audio"], reps_moved["audio"])


def test_auxiliary_heads_strategy() -> None:
    model = make("centralnet", 2, unimodal="heads")
    x, y = inputs("centralnet", 2), torch.randint(0, 3, (6,))
    out = model(x)
    expected = model.aux_heads(out.features)  # type: ignore[misc]
    torch.testing.assert_close(out.unimodal_logits["visual"], expected["visual"])
    loss = model.auxiliary_loss(out, y)
    loss.backward()
    assert model.aux_heads is not None and model.aux_heads.heads["audio"].weight.grad is not None
    assert all(p.grad is None for p in model.modality_parameters()["audio"])  # detached features
    assert {id(p) for p in model.aux_heads.parameters()}.isdisjoint({id(p) for p in model.shared_parameters()})
    with pytest.raises(ValueError, match="supports unimodal='masked' only"):
        make("mmtm", 2, unimodal="heads")
    with pytest.raises(ValueError, match='needs unimodal="heads"'):
        make("joint", 2).auxiliary_loss(out, y)


def test_constructor_errors() -> None:
    with pytest.raises(ValueError, match="variant must be one of joint, bottleneck"):
        TransformerFusion({"a": 2, "b": 2}, 2, variant="mbt")
    with pytest.raises(ValueError, match="two or more distinct modalities"):
        TransformerFusion({"a": 2}, 2)
    with pytest.raises(ValueError, match="ogm_shared must be None or one of"):
        TransformerFusion({"a": 2, "b": 2}, 2, d_model=8, heads=2, ogm_shared="c")
    with pytest.raises(ValueError, match=r"same number \(>= 1\) of stages, got \{'a': 1, 'b': 2\}"):
        CentralNet({"a": [nn.Linear(2, 2)], "b": [nn.Linear(2, 2), nn.Linear(2, 2)]}, [2], 2)
    with pytest.raises(ValueError, match="fuse_after must hold distinct stage indices"):
        MMTMNet({"a": [nn.Linear(2, 2)], "b": [nn.Linear(2, 2)]}, {"a": [2], "b": [2]}, 2, fuse_after=[3])
    model = CentralNet({"a": [nn.Linear(2, 3)], "b": [nn.Linear(2, 4)]}, [3], 2)
    with pytest.raises(ValueError, match=r"branch 'b' level 0 gives shape \(1, 4\); CentralNet expects width 3"):
        model({"a": torch.randn(1, 2), "b": torch.randn(1, 2)})


#: Independent oracle of what is modality-specific, by parameter name (the module docstrings).
OWN_PREFIXES = {
    "joint": ("proj.{m}.", "modality_embed.{m}", "pos_embed.{m}", "modality_blocks.{m}.", "tokenizers.{m}."),
    "bottleneck": ("proj.{m}.", "modality_embed.{m}", "pos_embed.{m}", "modality_blocks.{m}.", "tokenizers.{m}."),
    "mmtm": ("stages.{m}.",),
    "centralnet": ("branches.{m}.",),
}


@pytest.mark.parametrize("arch", ARCHS)
def test_modality_parameters_are_the_modality_specific_branches(arch: str) -> None:
    model = make(arch, 3)
    groups = model.modality_parameters()
    named = dict(model.named_parameters())
    for m in model.modalities:
        prefixes = tuple(p.format(m=m) for p in OWN_PREFIXES[arch])
        expected = {name for name in named if name == prefixes[0].rstrip(".") or name.startswith(prefixes)}
        expected |= {name for name in named if name in prefixes}
        got = {name for name, p in named.items() if any(p is q for q in groups[m])}
        assert got == expected and got, (m, sorted(got ^ expected))
    shared = {name for name, p in named.items() if any(p is q for q in model.shared_parameters())}
    assert shared == set(named) - {n for m in model.modalities for n in named if any(named[n] is q for q in groups[m])}
