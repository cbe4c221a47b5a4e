r"""Diagnosing and Re-learning: re-initialise each encoder in proportion to its over-fitting.

Reference: Wei, Li, Hu, "Diagnosing and Re-learning for Balanced Multimodal Learning", ECCV 2024;
official code ``GeWu-Lab/Diagnosing_Relearning_ECCV2024`` ``code/ours.py`` (lines cited below),
defaults from ``code/script/ours.sh``. Formulas and provenance: ``docs/comparison-methods.md``.

Every ``reinit_epoch`` epochs (after epochs 20, 40, 60 with the defaults, at most ``reinit_num``
times; ``ours.py`` 418-420), each modality's encoder features of the training split and of a
held-out split are clustered (min-max scaling of every feature to [-1, 1], then k-means with as
many clusters as classes; 104-110); the *purity* of a clustering is the share of samples whose
cluster's majority label is their own (63-95). The gap between the training and held-out purity
diagnoses how much the encoder memorised rather than learnt, and sets its re-initialisation
strength (122-127):

.. math:: w_m = \tanh\big(\lambda\,|P_m^{\text{train}} - P_m^{\text{val}}|\big), \qquad
          \theta_m \leftarrow w_m\,\theta_m^{\text{init}} + (1 - w_m)\,\theta_m,

for every parameter of encoder m, :math:`\theta^{\text{init}}` being the parameters before
training (345-349) and :math:`\lambda = 3` (156-166; ``ours.sh``). Training itself is plain
cross-entropy on the fused logits (196-204).

Deviations, each deliberate: k-means is our own torch implementation (greedy k-means++ seeding,
Lloyd iterations, the best of ``n_init`` runs from a seeded generator; the official code calls
scikit-learn's ``KMeans(random_state=0)``), so the clusters of ill-separated features may
differ; the re-initialisation happens in ``on_epoch_end``, before that epoch's validation (the
official code validates first, then re-initialises).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from modbalance.methods.base import METHODS, BalancingMethod, EpochContext, MethodRequirementError, Requirements
from modbalance.model import MultimodalClassifier

__all__ = ["ReLearning", "cluster_purity", "kmeans", "minmax_scale"]


def minmax_scale(x: Tensor) -> Tensor:
    """Scale every column of ``(N, D)`` ``x`` to [-1, 1] (constant columns become -1, as scikit-learn's scaler).

    Example:
        >>> import torch
        >>> minmax_scale(torch.tensor([[0.0, 5.0], [2.0, 5.0], [4.0, 5.0]])).tolist()
        [[-1.0, -1.0], [0.0, -1.0], [1.0, -1.0]]
    """
    low, high = x.min(dim=0).values, x.max(dim=0).values
    span = high - low
    span = torch.where(span > 0, span, torch.ones_like(span))
    return (x - low) / span * 2 - 1


def kmeans(
    x: Tensor, k: int, *, n_init: int = 10, max_iter: int = 300, tol: float = 1e-4, generator: torch.Generator
) -> Tensor:
    """Cluster the rows of ``(N, D)`` ``x`` into ``k`` groups; return ``(N,)`` cluster indices.

    Greedy k-means++ seeding (``2 + log k`` candidates per centre), Lloyd iterations until the
    centres move less than ``tol`` times the mean feature variance, the lowest-inertia run of
    ``n_init``.

    Example:
        >>> import torch
        >>> points = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
        >>> labels = kmeans(points, 2, generator=torch.Generator().manual_seed(0))
        >>> bool(labels[0] == labels[1]) and bool(labels[2] == labels[3]) and bool(labels[0] != labels[2])
        True
    """
    x = x.double()
    n = x.shape[0]
    k = min(k, n)
    threshold = tol * float(x.var(dim=0).mean()) if n > 1 else 0.0
    trials = 2 + int(math.log(k)) if k > 1 else 1
    best_labels, best_inertia = torch.zeros(n, dtype=torch.long, device=x.device), math.inf
    for _ in range(n_init):
        first = int(torch.randint(n, (1,), generator=generator, device=generator.device))
        centres = [x[first]]
        closest = ((x - x[first]) ** 2).sum(dim=1)
        for _ in range(1, k):
            weights = closest.clamp(min=0)
            if float(weights.sum()) <= 0:
                weights = torch.ones_like(weights)
            candidates = torch.multinomial(weights.to(generator.device), trials, replacement=True, generator=generator)
            candidates = candidates.to(x.device)
            distances = torch.cdist(x[candidates], x) ** 2
            potentials = torch.minimum(closest.unsqueeze(0), distances).sum(dim=1)
            best = int(potentials.argmin())
            centres.append(x[candidates[best]])
            closest = torch.minimum(closest, distances[best])
        centre = torch.stack(centres)
        for _ in range(max_iter):
            labels = torch.cdist(x, centre).argmin(dim=1)
            sums = torch.zeros_like(centre).index_add_(0, labels, x)
            counts = torch.bincount(labels, minlength=k).unsqueeze(1).to(x.dtype)
            updated = torch.where(counts > 0, sums / counts.clamp(min=1), centre)
            shift = float(((updated - centre) ** 2).sum())
            centre = updated
            if shift <= threshold:
                break
        labels = torch.cdist(x, centre).argmin(dim=1)
        inertia = float(((x - centre[labels]) ** 2).sum())
        if inertia < best_inertia:
            best_labels, best_inertia = labels, inertia
    return best_labels


def cluster_purity(target: Tensor, clusters: Tensor) -> float:
    """Share of samples whose cluster's most frequent label is their own.

    Example:
        >>> import torch
        >>> cluster_purity(torch.tensor([0, 0, 1, 1, 1]), torch.tensor([0, 0, 0, 1, 1]))  # 2 + 2 of 5
        0.8
    """
    classes = int(target.max()) + 1
    groups = int(clusters.max()) + 1
    counts = torch.zeros(groups, classes, device=target.device)
    counts.index_put_((clusters, target), torch.ones_like(target, dtype=counts.dtype), accumulate=True)
    return float(counts.max(dim=1).values.sum()) / target.shape[0]


@METHODS.register("relearning")
class ReLearning(BalancingMethod):
    r"""Diagnosing and Re-learning (Wei, Li and Hu, ECCV 2024): purity-gap driven encoder re-initialisation.

    Needs: a held-out split (the loop's ``EpochContext.forward("val")``) and the training split
    (``forward("train")``), any fusion, any number (>= 2) of modalities. Cost: nothing per step;
    every ``reinit_epoch`` epochs one feature pass over the training and held-out splits and a
    k-means per modality and split; memory for one copy of the initial encoder parameters.

    Args:
        move_lambda: :math:`\lambda` (official 3, ``ours.sh``).
        reinit_epoch: re-initialise after every epoch ``e > 0`` with ``e % reinit_epoch == 0``
            (official 20).
        reinit_num: at most this many re-initialisations (official 3).
        n_init: k-means restarts.
        seed: seed of the k-means generator (the official ``random_state=0``).
        start_epoch: first epoch (inclusive) in which re-initialisation may happen.
        end_epoch: last epoch (inclusive); ``None`` means no end.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from modbalance import MultimodalClassifier
        >>> from modbalance.fusion import Concat
        >>> from modbalance.methods.base import EpochContext, SplitOutputs
        >>> model = MultimodalClassifier({"audio": nn.Linear(6, 4), "visual": nn.Linear(5, 3)},
        ...                              Concat({"audio": 4, "visual": 3}, num_classes=2))
        >>> method = ReLearning(reinit_epoch=1)
        >>> method.check(model, held_out=True)          # remembers the initial encoder parameters
        >>> def forward(split):                          # what the trainer passes: a whole split, no grad
        ...     g = torch.Generator().manual_seed(0 if split == "train" else 1)
        ...     x = {"audio": torch.randn(20, 6, generator=g), "visual": torch.randn(20, 5, generator=g)}
        ...     with torch.no_grad():
        ...         out = model(x)
        ...     return SplitOutputs(out.logits, out.unimodal_logits, out.features, torch.arange(20) % 2)
        >>> stats = method.on_epoch_end(model, EpochContext(1, forward))
        >>> sorted(stats)
        ['relearning_weight_audio', 'relearning_weight_visual']
    """

    name = "relearning"
    requires = Requirements(min_modalities=2, held_out=True, ddp=False)

    def __init__(
        self,
        *,
        move_lambda: float = 3.0,
        reinit_epoch: int = 20,
        reinit_num: int = 3,
        n_init: int = 10,
        seed: int = 0,
        start_epoch: int = 0,
        end_epoch: int | None = None,
    ) -> None:
        super().__init__(start_epoch=start_epoch, end_epoch=end_epoch)
        if isinstance(move_lambda, bool) or not isinstance(move_lambda, (int, float)) or not math.isfinite(move_lambda):
            raise ValueError(f"method 'relearning': move_lambda must be a finite number, got {move_lambda!r}")
        for key, value in (("reinit_epoch", reinit_epoch), ("reinit_num", reinit_num), ("n_init", n_init)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"method 'relearning': {key} must be an int >= 1, got {value!r}")
        self.move_lambda = float(move_lambda)
        self.reinit_epoch = reinit_epoch
        self.reinit_num = reinit_num
        self.n_init = n_init
        self.seed = int(seed)
        #: Re-initialisations done so far.
        self.done = 0
        self._initial: dict[str, list[Tensor]] = {}

    def check(self, model: nn.Module, *, held_out: bool = False) -> None:
        """Base checks (two modalities, a held-out split); remembers the initial encoder parameters."""
        super().check(model, held_out=held_out)
        assert isinstance(model, MultimodalClassifier)
        self._remember(model)

    def _remember(self, model: MultimodalClassifier) -> None:
        if not self._initial:
            self._initial = {
                m: [p.detach().clone() for p in params] for m, params in model.modality_parameters().items()
            }

    def on_epoch_start(self, model: MultimodalClassifier, context: EpochContext) -> None:
        """Remember the initial encoder parameters if :meth:`check` did not."""
        self._remember(model)

    def due(self, epoch: int) -> bool:
        """Whether a re-initialisation follows ``epoch`` (``ours.py`` 418-420)."""
        return self.active(epoch) and epoch > 0 and epoch % self.reinit_epoch == 0 and self.done < self.reinit_num

    def diagnose(
        self, train: dict[str, Tensor], train_target: Tensor, val: dict[str, Tensor], val_target: Tensor
    ) -> dict[str, float]:
        r"""Modality -> :math:`w_m = \tanh(\lambda |P^{train}_m - P^{val}_m|)` from ``(N, D_m)`` features."""
        classes = int(max(int(train_target.max()), int(val_target.max()))) + 1
        weights = {}
        for m in train:
            purities = []
            for feats, target in ((train[m], train_target), (val[m], val_target)):
                generator = torch.Generator(device=feats.device).manual_seed(self.seed)
                clusters = kmeans(minmax_scale(feats.double()), classes, n_init=self.n_init, generator=generator)
                purities.append(cluster_purity(target, clusters))
            weights[m] = math.tanh(self.move_lambda * abs(purities[0] - purities[1]))
        return weights

    @torch.no_grad()
    def reinitialise(self, model: MultimodalClassifier, weights: dict[str, float]) -> None:
        r""":math:`\theta_m \leftarrow w_m \theta_m^{init} + (1 - w_m)\theta_m` for every encoder parameter."""
        self._remember(model)
        for m, params in model.modality_parameters().items():
            for p, initial in zip(params, self._initial[m], strict=True):
                p.copy_(weights[m] * initial + (1 - weights[m]) * p)

    def on_epoch_end(self, model: MultimodalClassifier, context: EpochContext) -> dict[str, float]:
        """Diagnose and re-initialise when due; returns the weights ``w_m`` then."""
        if not self.due(context.epoch):
            return {}
        if context.forward is None:
            raise MethodRequirementError(
                "method 'relearning' needs the loop to run the training and held-out splits through the model "
                "(EpochContext.forward); use the modbalance trainer or pass forward= yourself"
            )
        train, val = context.forward("train"), context.forward("val")
        weights = self.diagnose(train.features, train.target.long(), val.features, val.target.long())
        self.reinitialise(model, weights)
        self.done += 1
        return {f"relearning_weight_{m}": w for m, w in weights.items()}

    def get_extra_state(self) -> dict[str, Any]:
        """The initial encoder parameters and the number of re-initialisations done (exact resume)."""
        return {"done": self.done, "initial": {m: [t.clone() for t in v] for m, v in self._initial.items()}}

    def set_extra_state(self, state: Any) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        self.done = int(state["done"])
        self._initial = {m: list(v) for m, v in state["initial"].items()}

    def extra_repr(self) -> str:
        return (
            f"move_lambda={self.move_lambda}, reinit_epoch={self.reinit_epoch}, reinit_num={self.reinit_num}, "
            + super().extra_repr()
        )
