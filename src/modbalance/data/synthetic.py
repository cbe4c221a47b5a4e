"""The built-in imbalance lab: seeded synthetic multimodal data with exact Bayes limits.

Generative model, for K equiprobable classes and M modalities. Given the class y, modality
m draws a latent ``z_m = s_m * e_{m,y} + n_m`` in ``R^L``, with ``n_m ~ N(0, I_L)``, K
orthonormal class directions ``e_{m,k}`` (a seeded random orthogonal matrix) and its own
strength ``s_m``. The modalities are conditionally independent given y. The network sees
``x_m = standardise(f_m(z_m))`` where ``f_m`` is a fixed, seeded, invertible mixing into
``width`` features:

1. a linear lift ``h = c * Q z`` with ``Q`` a random ``(width, L)`` matrix with orthonormal
   columns (injective) and ``c`` chosen so each coordinate has unit variance on average;
2. then ``depth`` blocks, each a random rotation ``h <- R h`` (orthogonal ``width x width``),
   a *swirl* that rotates every coordinate pair ``(h_2i, h_2i+1)`` by the angle
   ``twist * radius`` (the radius of the pair is kept, so it is undone by rotating back) and
   an element-wise strictly increasing map ``h <- h + (r / b) sin(b h + phase)`` with
   ``r < 1``.

Depth 0 is the linear lift only. The swirl is the part that makes a modality need real
non-linear learning: element-wise monotone maps alone keep the classes almost linearly
separable (see ``docs/lab_sweep.md``). Standardisation uses the train split's statistics;
it is affine and invertible, so it does not change any Bayes limit.

Because every ``f_m`` is invertible and the modalities are conditionally independent, the
Bayes-optimal accuracy of each modality, of any subset and of all together is known exactly
(see :mod:`modbalance.data._bayes`): :meth:`SyntheticLab.bayes_accuracy`.

Presets live in :data:`LAB_PRESETS`. ``"default"`` shows modality imbalance: after plain joint
training the weak modality (``"visual"``) is far below what its encoder reaches alone. It was
found by ``benchmarks/find_lab_preset.py``; the recipe it was tuned with is ``spec.recipe``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import operator
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, SupportsIndex, cast, overload

import torch
from torch import Tensor
from torch.utils.data import Dataset

from modbalance.data._bayes import fused_snr, isotropic_bayes_accuracy

__all__ = [
    "FUSED_KEY",
    "LAB_PRESETS",
    "InvertibleMixing",
    "LabRecipe",
    "LabSpec",
    "LabSplit",
    "ModalitySpec",
    "SyntheticLab",
    "fused_snr",
    "isotropic_bayes_accuracy",
    "lab_preset",
]

SplitName = Literal["train", "val", "test"]
_SPLITS: tuple[str, ...] = ("train", "val", "test")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
#: The key that :meth:`SyntheticLab.bayes_accuracy` uses for all modalities together.
FUSED_KEY = "fused"
# Element-wise non-linearity h + (r / b) sin(b h + phase): slope in [1 - r, 1 + r] > 0.
_WIGGLE_FREQ = 2.0
_WIGGLE_RATIO = 0.9
_BISECTION_STEPS = 60


def _check_real(value: object, name: str, *, minimum: float, strict: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    number = float(value)
    bad = number <= minimum if strict else number < minimum
    if not math.isfinite(number) or bad:
        relation = ">" if strict else ">="
        raise ValueError(f"{name} must be finite and {relation} {minimum:g}, got {value!r}")
    return number


def _check_int(value: object, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class ModalitySpec:
    """How one modality of the lab is generated.

    Args:
        strength: Distance ``s > 0`` of each class mean from the origin in latent space, in noise
            standard deviations. Sets the modality's Bayes-optimal accuracy.
        width: Number of input features ``W`` the network sees (must be >= the lab's latent dim).
        depth: Number of non-linear mixing blocks (0: linear lift only).
        twist: Swirl rate in radians per unit radius of each coordinate pair (0: no swirl).

    Example:
        >>> ModalitySpec(strength=2.0, width=16, depth=1)
        ModalitySpec(strength=2.0, width=16, depth=1, twist=4.0)
    """

    strength: float
    width: int
    depth: int
    twist: float = 4.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "strength", _check_real(self.strength, "strength", minimum=0, strict=True))
        _check_int(self.width, "width", minimum=1)
        _check_int(self.depth, "depth", minimum=0)
        object.__setattr__(self, "twist", _check_real(self.twist, "twist", minimum=0, strict=False))


@dataclass(frozen=True)
class LabRecipe:
    """The training recipe a lab preset was tuned with (demo defaults for the trainer).

    One :class:`~modbalance.encoders.mlp.MLPEncoder` per modality
    (``MLPEncoder(width, hidden_dim, feature_dim, depth=encoder_depth)``), a linear head on the
    concatenated features, cross-entropy on the fused logits, SGD with momentum over shuffled
    mini-batches, no learning-rate schedule.

    Args:
        hidden_dim: Hidden width of each encoder.
        encoder_depth: Number of linear layers per encoder.
        feature_dim: Output feature size of each encoder.
        lr: SGD learning rate.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        batch_size: Mini-batch size.
        epochs: Number of passes over the train split.

    Example:
        >>> LabRecipe(epochs=5).batch_size
        64
    """

    hidden_dim: int = 64
    encoder_depth: int = 2
    feature_dim: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    epochs: int = 20

    def __post_init__(self) -> None:
        for name in ("hidden_dim", "encoder_depth", "feature_dim", "batch_size", "epochs"):
            _check_int(getattr(self, name), name, minimum=1)
        object.__setattr__(self, "lr", _check_real(self.lr, "lr", minimum=0, strict=True))
        momentum = _check_real(self.momentum, "momentum", minimum=0, strict=False)
        if momentum >= 1.0:
            raise ValueError(f"momentum must be < 1, got {self.momentum!r}")
        object.__setattr__(self, "momentum", momentum)
        decay = _check_real(self.weight_decay, "weight_decay", minimum=0, strict=False)
        object.__setattr__(self, "weight_decay", decay)


@dataclass(frozen=True)
class LabSpec:
    """A full lab configuration: modalities, classes, split sizes and the tuned recipe.

    Args:
        modalities: Modality name (lowercase identifier, not ``"fused"``) -> its spec. At least 2.
        num_classes: Number of equiprobable classes ``K >= 2``.
        latent_dim: Latent dimension ``L >= K`` of every modality.
        n_train: Train split size (>= K). Labels are balanced within each split.
        n_val: Validation split size (>= 0).
        n_test: Test split size (>= 1).
        recipe: The training recipe this spec was tuned with.
        tokens: 0 (default): each modality's inputs are vectors ``(N, W_m)``. ``T >= 1``: token
            sequences ``(N, T, W_m / T)``, the standardised vector cut into ``T`` consecutive
            chunks (a fixed invertible reshape, so every Bayes limit is unchanged); every width
            must be divisible by ``T``. For the token-level models of :mod:`modbalance.interaction`.

    Example:
        >>> spec = LabSpec({"audio": ModalitySpec(3.0, 8, 0), "visual": ModalitySpec(1.5, 8, 1)},
        ...                num_classes=3, latent_dim=4, n_train=30, n_val=0, n_test=30)
        >>> sorted(spec.modalities)
        ['audio', 'visual']
    """

    modalities: Mapping[str, ModalitySpec]
    num_classes: int
    latent_dim: int
    n_train: int
    n_val: int
    n_test: int
    recipe: LabRecipe = field(default_factory=LabRecipe)
    tokens: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.modalities, Mapping):
            raise TypeError(f"modalities must be a mapping name -> ModalitySpec, got {type(self.modalities).__name__}")
        num_classes = _check_int(self.num_classes, "num_classes", minimum=2)
        latent_dim = _check_int(self.latent_dim, "latent_dim", minimum=num_classes)
        _check_int(self.n_train, "n_train", minimum=num_classes)
        _check_int(self.n_val, "n_val", minimum=0)
        _check_int(self.n_test, "n_test", minimum=1)
        if not isinstance(self.recipe, LabRecipe):
            raise TypeError(f"recipe must be a LabRecipe, got {type(self.recipe).__name__}")
        if len(self.modalities) < 2:
            raise ValueError(f"modalities must hold at least 2 entries, got {list(self.modalities)}")
        for name, spec in self.modalities.items():
            if not isinstance(name, str) or not _NAME_RE.match(name) or name == FUSED_KEY:
                raise ValueError(f"modality name must be a lowercase identifier other than {FUSED_KEY!r}, got {name!r}")
            if not isinstance(spec, ModalitySpec):
                raise TypeError(f"modalities[{name!r}] must be a ModalitySpec, got {type(spec).__name__}")
            if spec.width < latent_dim:
                raise ValueError(f"modalities[{name!r}].width must be >= latent_dim={latent_dim}, got {spec.width}")
        tokens = _check_int(self.tokens, "tokens", minimum=0)
        uneven = {name: spec.width for name, spec in self.modalities.items() if tokens and spec.width % tokens}
        if uneven:
            raise ValueError(f"tokens={tokens} must divide every modality's width; it does not divide {uneven}")
        object.__setattr__(self, "modalities", dict(self.modalities))

    def __hash__(self) -> int:  # the modalities dict is not hashable by itself
        return hash(
            (
                tuple(self.modalities.items()),
                self.num_classes,
                self.latent_dim,
                self.n_train,
                self.n_val,
                self.n_test,
                self.recipe,
                self.tokens,
            )
        )

    def replace(self, **changes: object) -> LabSpec:
        """Return a copy with some fields changed (validated again).

        Example:
            >>> lab_preset("tiny").replace(n_train=60).n_train
            60
        """
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _orthogonal(n: int, generator: torch.Generator) -> Tensor:
    """A Haar-random ``(n, n)`` orthogonal matrix in float64."""
    gaussian = torch.randn(n, n, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


class InvertibleMixing:
    """The seeded invertible map ``f: R^L -> R^W`` of one modality (float64 in and out).

    ``f(z) = B_depth(...B_1(c * Q z))`` where each block ``B`` is rotation, swirl and element-wise
    monotone wiggle (module docstring). Use :meth:`random` to draw one.

    Args:
        lift: ``(W, L)`` lift matrix with orthogonal columns of equal norm.
        rotations: ``(depth, W, W)`` orthogonal matrices.
        phases: ``(depth, W)`` phases of the element-wise non-linearity.
        twist: Swirl rate (radians per unit radius).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> f = InvertibleMixing.random(3, 6, depth=2, twist=2.0, scale=1.0, generator=g)
        >>> z = torch.randn(5, 3, dtype=torch.float64)
        >>> torch.allclose(f.inverse(f(z)), z, atol=1e-9)
        True
    """

    def __init__(self, lift: Tensor, rotations: Tensor, phases: Tensor, twist: float) -> None:
        if lift.dim() != 2 or lift.shape[0] < lift.shape[1]:
            raise ValueError(f"lift must have shape (W, L) with W >= L, got {tuple(lift.shape)}")
        width = lift.shape[0]
        if rotations.shape[1:] != (width, width) or phases.shape != (rotations.shape[0], width):
            raise ValueError(
                f"rotations must be (depth, {width}, {width}) and phases (depth, {width}), "
                f"got {tuple(rotations.shape)} and {tuple(phases.shape)}"
            )
        self.lift = lift.to(torch.float64)
        self.rotations = rotations.to(torch.float64)
        self.phases = phases.to(torch.float64)
        self.twist = float(twist)

    @classmethod
    def random(
        cls, latent_dim: int, width: int, depth: int, twist: float, scale: float, generator: torch.Generator
    ) -> InvertibleMixing:
        """Draw a mixing from ``generator``; the lift is ``scale`` times orthonormal columns."""
        lift = _orthogonal(width, generator)[:, :latent_dim] * scale
        rotations = torch.empty(0, width, width, dtype=torch.float64)
        if depth:
            rotations = torch.stack([_orthogonal(width, generator) for _ in range(depth)])
        phases = 2.0 * math.pi * torch.rand(depth, width, generator=generator, dtype=torch.float64)
        return cls(lift, rotations, phases, twist)

    @property
    def depth(self) -> int:
        """Number of non-linear blocks."""
        return int(self.rotations.shape[0])

    def _swirl(self, h: Tensor, sign: float) -> Tensor:
        pairs = h.shape[-1] // 2
        u, v = h[..., 0 : 2 * pairs : 2], h[..., 1 : 2 * pairs : 2]
        angle = sign * self.twist * torch.sqrt(u * u + v * v)  # the radius is invariant
        cos, sin = torch.cos(angle), torch.sin(angle)
        out = h.clone()
        out[..., 0 : 2 * pairs : 2] = u * cos - v * sin
        out[..., 1 : 2 * pairs : 2] = u * sin + v * cos
        return out

    def __call__(self, z: Tensor) -> Tensor:
        """Map latents ``(N, L)`` to features ``(N, W)``."""
        h = z.to(torch.float64) @ self.lift.T
        for rotation, phase in zip(self.rotations, self.phases, strict=True):
            h = self._swirl(h @ rotation.T, 1.0)
            h = h + (_WIGGLE_RATIO / _WIGGLE_FREQ) * torch.sin(_WIGGLE_FREQ * h + phase)
        return h

    def inverse(self, x: Tensor) -> Tensor:
        """Recover latents ``(N, L)`` from features ``(N, W)`` (least squares on the lift)."""
        h = x.to(torch.float64)
        amplitude = _WIGGLE_RATIO / _WIGGLE_FREQ
        for rotation, phase in zip(self.rotations.flip(0), self.phases.flip(0), strict=True):
            # The wiggle is strictly increasing and moves points by at most `amplitude`: bisect.
            low, high = h - amplitude, h + amplitude
            for _ in range(_BISECTION_STEPS):
                mid = 0.5 * (low + high)
                above = mid + amplitude * torch.sin(_WIGGLE_FREQ * mid + phase) > h
                high = torch.where(above, mid, high)
                low = torch.where(above, low, mid)
            h = self._swirl(0.5 * (low + high), -1.0) @ rotation
        return torch.linalg.lstsq(self.lift, h.T).solution.T


class LabSplit(Dataset):
    """One split of a :class:`SyntheticLab`, indexable one sample or one batch at a time.

    ``split[i]`` gives ``(dict name -> Tensor(W_m), int)``; ``split[idx]`` with a 1-D integer
    tensor, list or range gives the batch ``(dict name -> Tensor(B, W_m), LongTensor(B))`` in one
    vectorised lookup. To get batches from a ``DataLoader`` without per-sample calls, pass a
    ``BatchSampler`` as ``sampler`` with ``batch_size=None``.

    Attributes:
        inputs: Name -> float32 ``(N, W_m)`` network inputs.
        targets: ``(N,)`` int64 labels.
        latents: Name -> float64 ``(N, L)`` true latents (for Bayes sanity checks).

    Example:
        >>> split = SyntheticLab(lab_preset("tiny"), seed=0).split("train")
        >>> x, y = split[torch.tensor([0, 2, 5])]
        >>> x["audio"].shape, y.shape
        (torch.Size([3, 8]), torch.Size([3]))
        >>> loader = torch.utils.data.DataLoader(split, batch_size=None,
        ...     sampler=torch.utils.data.BatchSampler(range(len(split)), batch_size=32, drop_last=False))
        >>> next(iter(loader))[0]["visual"].shape
        torch.Size([32, 8])
    """

    def __init__(self, inputs: dict[str, Tensor], targets: Tensor, latents: dict[str, Tensor]) -> None:
        n = targets.shape[0]
        for name, tensor in [*inputs.items(), *latents.items()]:
            if tensor.shape[0] != n:
                raise ValueError(f"{name!r} has {tensor.shape[0]} rows, expected {n} (the number of targets)")
        self.inputs = inputs
        self.targets = targets
        self.latents = latents

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    @overload
    def __getitem__(self, index: int) -> tuple[dict[str, Tensor], int]: ...

    @overload
    def __getitem__(self, index: Tensor | Sequence[int] | range) -> tuple[dict[str, Tensor], Tensor]: ...

    def __getitem__(
        self, index: int | Tensor | Sequence[int] | range
    ) -> tuple[dict[str, Tensor], int] | tuple[dict[str, Tensor], Tensor]:
        if isinstance(index, Tensor) and index.dim() == 1:
            if index.dtype.is_floating_point or index.dtype == torch.bool or index.is_complex():
                raise TypeError(f"batch index must be an integer tensor, got dtype {index.dtype}")
            return self._batch(index.long())
        if isinstance(index, (list, tuple, range)):
            if not all(isinstance(i, int) and not isinstance(i, bool) for i in index):
                raise TypeError(f"a batch index list must hold only ints, got {list(index)[:8]}")
            return self._batch(torch.tensor(list(index), dtype=torch.long))
        if isinstance(index, bool) or (isinstance(index, Tensor) and index.dtype == torch.bool):
            raise TypeError(f"index must be an int or a 1-D integer index, got {index!r}")
        try:
            position = operator.index(cast(SupportsIndex, index))  # ints, numpy ints, 0-d integer tensors
        except TypeError:
            raise TypeError(f"index must be an int or a 1-D integer tensor/list, got {type(index).__name__}") from None
        n = len(self)
        if not -n <= position < n:
            raise IndexError(f"index {position} is out of range for a split of {n} samples")
        return {name: x[position] for name, x in self.inputs.items()}, int(self.targets[position])

    def _batch(self, index: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        return {name: x[index] for name, x in self.inputs.items()}, self.targets[index]


def _derived_seed(seed: int, salt: str) -> int:
    return (seed * 0x9E3779B1 + zlib.crc32(salt.encode())) % (2**63)


class SyntheticLab:
    """A seeded instance of a :class:`LabSpec`: all splits generated once, vectorised.

    Every modality has its own random stream derived from ``(seed, name)``, so a modality's
    class directions and mixing do not depend on which other modalities the spec holds.

    Args:
        spec: The lab configuration, e.g. ``lab_preset("default")``.
        seed: Any int; the same seed gives identical data.

    Attributes:
        spec, seed: As given.
        modalities: Modality names in spec order.
        class_means: Name -> ``(K, L)`` float64 class means ``s_m * e_{m,k}``.
        mixings: Name -> :class:`InvertibleMixing`.
        feature_mean, feature_std: Name -> ``(W_m,)`` float64 train statistics used to standardise.

    Example:
        >>> lab = SyntheticLab(lab_preset("tiny"), seed=0)
        >>> len(lab.split("train")), sorted(lab.bayes_accuracy())
        (240, ['audio', 'fused', 'visual'])
    """

    def __init__(self, spec: LabSpec, seed: int) -> None:
        if not isinstance(spec, LabSpec):
            raise TypeError(f"spec must be a LabSpec, got {type(spec).__name__}")
        self.spec = spec
        self.seed = _check_int(seed, "seed", minimum=0)
        self.modalities: tuple[str, ...] = tuple(spec.modalities)
        sizes = {"train": spec.n_train, "val": spec.n_val, "test": spec.n_test}
        total = sum(sizes.values())
        label_gen = torch.Generator().manual_seed(_derived_seed(seed, "labels"))
        targets = torch.cat(
            [torch.arange(n) % spec.num_classes for n in sizes.values()]
        )  # balanced within each split, then shuffled within each split
        offsets = [0, spec.n_train, spec.n_train + spec.n_val, total]
        for lo, hi in itertools.pairwise(offsets):
            targets[lo:hi] = targets[lo:hi][torch.randperm(hi - lo, generator=label_gen)]

        self.class_means: dict[str, Tensor] = {}
        self.mixings: dict[str, InvertibleMixing] = {}
        self.feature_mean: dict[str, Tensor] = {}
        self.feature_std: dict[str, Tensor] = {}
        latents: dict[str, Tensor] = {}
        features: dict[str, Tensor] = {}
        L = spec.latent_dim
        for name, mod in spec.modalities.items():
            gen = torch.Generator().manual_seed(_derived_seed(seed, f"modality:{name}"))
            directions = _orthogonal(L, gen)[:, : spec.num_classes].T  # (K, L), orthonormal rows
            self.class_means[name] = mod.strength * directions
            scale = math.sqrt(mod.width / (L + mod.strength**2))  # unit variance per coordinate
            self.mixings[name] = InvertibleMixing.random(L, mod.width, mod.depth, mod.twist, scale, gen)
            noise = torch.randn(total, L, generator=gen, dtype=torch.float64)
            latents[name] = self.class_means[name][targets] + noise
            h = self.mixings[name](latents[name])
            train = h[: spec.n_train]
            self.feature_mean[name] = train.mean(0)
            self.feature_std[name] = train.std(0).clamp_min(1e-12)
            features[name] = ((h - self.feature_mean[name]) / self.feature_std[name]).to(torch.float32)
            if spec.tokens:
                features[name] = features[name].reshape(total, spec.tokens, mod.width // spec.tokens)

        self._splits: dict[str, LabSplit] = {}
        for split, (lo, hi) in zip(_SPLITS, itertools.pairwise(offsets), strict=True):
            self._splits[split] = LabSplit(
                {name: features[name][lo:hi] for name in self.modalities},
                targets[lo:hi].clone(),
                {name: latents[name][lo:hi] for name in self.modalities},
            )

    def split(self, name: SplitName) -> LabSplit:
        """Return the ``"train"``, ``"val"`` or ``"test"`` split."""
        if name not in self._splits:
            raise ValueError(f"split must be one of {list(_SPLITS)}, got {name!r}")
        return self._splits[name]

    def _check_names(self, modalities: Iterable[str]) -> list[str]:
        names = list(modalities)
        unknown = [m for m in names if m not in self.spec.modalities]
        if unknown or not names:
            raise ValueError(f"modalities must be a non-empty subset of {list(self.modalities)}, got {names}")
        return names

    def subset_bayes_accuracy(self, modalities: Iterable[str]) -> float:
        """Exact Bayes-optimal accuracy using the given modalities together.

        Example:
            >>> lab = SyntheticLab(lab_preset("tiny"), seed=0)
            >>> lab.subset_bayes_accuracy(["audio", "visual"]) == lab.bayes_accuracy()["fused"]
            True
        """
        names = self._check_names(modalities)
        snr = fused_snr([self.spec.modalities[m].strength for m in names])
        return isotropic_bayes_accuracy(snr, self.spec.num_classes)

    def bayes_accuracy(self) -> dict[str, float]:
        """Exact Bayes-optimal accuracies: one per modality alone and ``"fused"`` for all together."""
        limits = {m: self.subset_bayes_accuracy([m]) for m in self.modalities}
        limits[FUSED_KEY] = self.subset_bayes_accuracy(self.modalities)
        return limits

    def bayes_log_likelihoods(self, split: SplitName, modality: str) -> Tensor:
        """Class log-likelihoods ``(N, K)`` of one modality's true latents (up to a constant)."""
        self._check_names([modality])
        z = self.split(split).latents[modality]
        means = self.class_means[modality]
        return z @ means.T - 0.5 * (means * means).sum(1)

    def empirical_bayes_accuracy(self, split: SplitName) -> dict[str, float]:
        """Accuracy of the Bayes classifier (argmax posterior from the true latents) on a split.

        A sanity figure: it fluctuates around :meth:`bayes_accuracy` with binomial noise.
        Returns ``nan`` for an empty split.

        Example:
            >>> lab = SyntheticLab(lab_preset("default"), seed=0)
            >>> abs(lab.empirical_bayes_accuracy("test")["fused"] - lab.bayes_accuracy()["fused"]) < 0.01
            True
        """
        targets = self.split(split).targets
        if targets.numel() == 0:
            return {m: math.nan for m in (*self.modalities, FUSED_KEY)}
        logliks = {m: self.bayes_log_likelihoods(split, m) for m in self.modalities}
        result = {m: float((ll.argmax(1) == targets).double().mean()) for m, ll in logliks.items()}
        fused = torch.stack(list(logliks.values())).sum(0)
        result[FUSED_KEY] = float((fused.argmax(1) == targets).double().mean())
        return result

    def decode_latents(self, modality: str, x: Tensor) -> Tensor:
        """Invert standardisation and mixing: inputs ``(N, W_m)`` (or tokens ``(N, T, W_m / T)``) -> latents ``(N, L)``.

        Example:
            >>> lab = SyntheticLab(lab_preset("tiny"), seed=0)
            >>> z = lab.decode_latents("visual", lab.split("val").inputs["visual"])
            >>> bool((z - lab.split("val").latents["visual"]).abs().max() < 1e-4)
            True
        """
        self._check_names([modality])
        h = x.flatten(1).to(torch.float64) * self.feature_std[modality] + self.feature_mean[modality]
        return self.mixings[modality].inverse(h)


_TINY = LabSpec(
    modalities={"audio": ModalitySpec(3.0, 8, 0), "visual": ModalitySpec(2.0, 8, 1, twist=1.0)},
    num_classes=3,
    latent_dim=3,
    n_train=240,
    n_val=60,
    n_test=240,
    recipe=LabRecipe(hidden_dim=16, encoder_depth=2, feature_dim=8, lr=0.05, batch_size=32, epochs=3),
)

#: Named lab configurations. ``"default"`` (audio dominant, visual weak) shows modality
#: imbalance; ``"three"`` adds a ``"text"`` modality; ``"tiny"`` is for fast tests.
LAB_PRESETS: dict[str, LabSpec] = {
    "default": LabSpec(
        modalities={"audio": ModalitySpec(3.0, 32, 0), "visual": ModalitySpec(3.0, 64, 1, twist=5.0)},
        num_classes=4,
        latent_dim=4,
        n_train=2000,
        n_val=500,
        n_test=2000,
        recipe=LabRecipe(),
    ),
    "three": LabSpec(
        modalities={
            "audio": ModalitySpec(3.0, 32, 0),
            "visual": ModalitySpec(3.0, 64, 1, twist=5.0),
            "text": ModalitySpec(2.5, 32, 1, twist=2.0),
        },
        num_classes=4,
        latent_dim=4,
        n_train=2000,
        n_val=500,
        n_test=2000,
        recipe=LabRecipe(),
    ),
    "tiny": _TINY,
}


def lab_preset(name: str) -> LabSpec:
    """Return the named preset from :data:`LAB_PRESETS`.

    Raises:
        ValueError: If ``name`` is unknown; the message lists the valid names.

    Example:
        >>> lab_preset("default").modalities["visual"].depth >= 1
        True
    """
    if name not in LAB_PRESETS:
        raise ValueError(f"Unknown lab preset {name!r}. Available: {', '.join(sorted(LAB_PRESETS))}")
    return LAB_PRESETS[name]
