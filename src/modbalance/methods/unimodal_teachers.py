r"""UME and UMT: uni-modal ensemble and uni-modal teachers (Du et al., ICML 2023).

Reference: Chenzhuang Du, Jiaye Teng, Tingle Li, Yichen Liu, Tianyuan Yuan, Yue Wang, Yang Yuan,
Hang Zhao, "On Uni-Modal Feature Learning in Supervised Multi-Modal Learning", ICML 2023
(arXiv:2305.01233), Section 4. No official code was found; the loss of UMT is transcribed from
BalanceBenchmark (``GeWu-Lab/BalanceBenchmark`` at commit 4c1482f,
``balancemm/trainer/UMT_trainer.py`` lines 132-144, default ``scaling`` 10 in
``configs/trainer_config.yaml`` line 66). ``docs/comparison-methods.md`` lists the provenance and
the differences.

**UME** (uni-modal ensemble): every modality's model is trained alone and the predictions are
combined. With a late-fusion model whose head has an exact block per modality
(:func:`~modbalance.methods.base.unimodal_logits_with_grad`), training

.. math:: \mathcal L_{\text{UME}} = \sum_m \mathrm{CE}(W_m\phi_m + b_m,\ y)

is the same as training the uni-modal models independently: the encoders are disjoint and
modality :math:`m`'s parameters receive the gradient of its own term only. With
:class:`~modbalance.fusion.Sum` this is exact (each modality has its own head and bias); with
:class:`~modbalance.fusion.Concat` the uni-modal heads share the bias (``b * bias_share`` each),
whose gradient is then the sum of the modalities' bias gradients times the share: every other
parameter is updated exactly as in independent training. The prediction is the ensemble, the
sum of the uni-modal logits (``ensemble="logits"``, which equals the fused logits for both fusions)
or the log of the mean of the uni-modal probabilities (``ensemble="probs"``).

**UMT** (uni-modal teachers): uni-modal models are trained first; the multimodal model is then
trained with cross-entropy plus a feature-distillation term that pulls each modality's encoder
output :math:`\phi_m` toward the frozen teacher encoder's output :math:`\phi_m^{T}` on the same
input:

.. math:: \mathcal L_{\text{UMT}} = \mathrm{CE}(f(x), y)
   + \lambda \sum_m \frac{1}{B D_m}\lVert \phi_m - \phi_m^{T}\rVert_F^2,

:math:`\lambda` = ``scaling`` (10, BalanceBenchmark's default). The teachers are modules mapping a
modality's input to ``(B, D_m)`` features (in the trainer: the encoders of ``unimodal:<m>`` runs,
loaded by :func:`modbalance.train.teachers.load_teachers` from their checkpoints). They are frozen
(no gradient, not in the optimizer) and always in eval mode.

Cost per step: UME none (the per-modality logits are slices of the head); UMT one teacher forward
per modality without gradients (about one extra forward pass of the encoders).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modbalance.methods.base import (
    METHODS,
    BalancingMethod,
    MethodRequirementError,
    Requirements,
    unimodal_logits_with_grad,
)
from modbalance.model import ModelOutput, MultimodalClassifier

__all__ = ["UME", "UMT", "ume_ensemble"]

#: Values of ``UME(ensemble=...)``.
ENSEMBLES = ("logits", "probs")


def ume_ensemble(unimodal_logits: Mapping[str, Tensor], ensemble: str = "logits") -> Tensor:
    r"""The ``(B, C)`` ensemble of uni-modal ``(B, C)`` logits.

    ``"logits"``: :math:`\sum_m z_m`; ``"probs"``: :math:`\log \frac1M\sum_m \mathrm{softmax}(z_m)`
    (log-probabilities, usable as logits: the arg-max is that of the mean probability).

    Example:
        >>> import torch
        >>> z = {"a": torch.tensor([[2.0, 0.0]]), "v": torch.tensor([[0.0, 1.0]])}
        >>> ume_ensemble(z)
        tensor([[2., 1.]])
        >>> ume_ensemble(z, "probs").exp().sum().item()
        1.0
    """
    if ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble must be one of {', '.join(ENSEMBLES)}, got {ensemble!r}")
    parts = [z.float() for z in unimodal_logits.values()]
    if ensemble == "logits":
        return torch.stack(parts).sum(dim=0)
    return torch.stack([F.log_softmax(z, dim=-1) for z in parts]).logsumexp(dim=0) - math.log(len(parts))


@METHODS.register("ume")
class UME(BalancingMethod):
    r"""Uni-modal ensemble: train :math:`\sum_m \mathrm{CE}(z_m, y)`, predict with the ensemble.

    Args:
        ensemble: ``"logits"`` (sum of the uni-modal logits) or ``"probs"`` (mean of the uni-modal
            probabilities, returned as log-probabilities).
        start_epoch, end_epoch: the window (outside it: cross-entropy of the fused logits).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from modbalance import MultimodalClassifier
        >>> from modbalance.fusion import Sum
        >>> model = MultimodalClassifier({"audio": nn.Linear(6, 4), "visual": nn.Linear(5, 3)},
        ...                              Sum({"audio": 4, "visual": 3}, num_classes=2))
        >>> method = UME()
        >>> method.check(model)
        >>> out = model({"audio": torch.randn(8, 6), "visual": torch.randn(8, 5)})
        >>> method.loss(model, out, torch.randint(0, 2, (8,)), epoch=0).backward()
        >>> torch.allclose(method.predict(model, out), out.logits, atol=1e-6)  # sum of logits = fused
        True
    """

    name: ClassVar[str] = "ume"
    requires: ClassVar[Requirements] = Requirements(fusions=("Concat", "Sum"))

    def __init__(self, ensemble: str = "logits", *, start_epoch: int = 0, end_epoch: int | None = None) -> None:
        super().__init__(start_epoch=start_epoch, end_epoch=end_epoch)
        if ensemble not in ENSEMBLES:
            raise ValueError(f"method 'ume': ensemble={ensemble!r} must be one of {', '.join(ENSEMBLES)}")
        self.ensemble = ensemble

    def compute_loss(
        self,
        model: MultimodalClassifier,
        out: ModelOutput,
        target: Tensor,
        *,
        epoch: int | None = None,
        inputs: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """Sum over modalities of the cross-entropy of each modality's own logits (fp32)."""
        parts = unimodal_logits_with_grad(model, out.features)
        return torch.stack([F.cross_entropy(z.float(), target) for z in parts.values()]).sum()

    def predict(self, model: MultimodalClassifier, out: ModelOutput) -> Tensor:
        """The ensemble of the exact per-modality logits (:func:`ume_ensemble`)."""
        with torch.no_grad():
            return ume_ensemble(unimodal_logits_with_grad(model, out.features), self.ensemble)

    def extra_repr(self) -> str:
        return f"ensemble={self.ensemble!r}, {super().extra_repr()}"


@METHODS.register("umt")
class UMT(BalancingMethod):
    r"""Uni-modal teachers: cross-entropy plus :math:`\lambda\sum_m \mathrm{MSE}(\phi_m, \phi^T_m)`.

    Args:
        teachers: modality name -> frozen teacher: a module mapping that modality's input to
            ``(B, D_m)`` features like the student's encoder (e.g. the encoder of a model trained
            on the modality alone). A ``str``/path value names a checkpoint for a loader to
            replace by a module (the trainer does, from ``method.options.teachers``); the method
            refuses to train until every teacher is a module.
        scaling: :math:`\lambda \ge 0`, the distillation weight (BalanceBenchmark's default 10).
        start_epoch, end_epoch: the window (outside it: cross-entropy only).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from modbalance import MultimodalClassifier
        >>> from modbalance.fusion import Concat
        >>> encoders = {"audio": nn.Linear(6, 4), "visual": nn.Linear(5, 3)}
        >>> model = MultimodalClassifier(encoders, Concat({"audio": 4, "visual": 3}, num_classes=2))
        >>> method = UMT({"audio": nn.Linear(6, 4), "visual": nn.Linear(5, 3)}, scaling=10.0)
        >>> method.check(model)
        >>> inputs, y = {"audio": torch.randn(8, 6), "visual": torch.randn(8, 5)}, torch.randint(0, 2, (8,))
        >>> out = model(inputs)
        >>> distances = method.distances(out, inputs)  # modality -> mean squared feature distance
        >>> sorted(distances), bool(distances["audio"] > 0)
        (['audio', 'visual'], True)
        >>> method.loss(model, out, y, epoch=0, inputs=inputs).backward()
        >>> [p.grad is None for p in method.teachers.parameters()][:2]  # the teachers stay frozen
        [True, True]
    """

    name: ClassVar[str] = "umt"
    requires: ClassVar[Requirements] = Requirements(extra_forwards=1)
    #: The option whose file names the trainer replaces by loaded teacher modules.
    teacher_option: ClassVar[str] = "teachers"

    def __init__(
        self,
        teachers: Mapping[str, nn.Module | str | os.PathLike[str]] | None = None,
        scaling: float = 10.0,
        *,
        start_epoch: int = 0,
        end_epoch: int | None = None,
    ) -> None:
        super().__init__(start_epoch=start_epoch, end_epoch=end_epoch)
        if teachers is None or not isinstance(teachers, Mapping) or not teachers:
            raise ValueError(
                f"method 'umt' needs teachers: modality -> a uni-modal teacher (an nn.Module giving that "
                f"modality's features), got {teachers!r}. In the trainer set method.options.teachers.<modality>="
                "<run folder or checkpoint of a unimodal:<modality> run> for every modality"
            )
        number = isinstance(scaling, int | float) and not isinstance(scaling, bool)
        if not number or not math.isfinite(scaling) or scaling < 0:
            raise ValueError(f"method 'umt': scaling={scaling!r} must be a finite number >= 0")
        modules: dict[str, nn.Module] = {}
        self.teacher_files: dict[str, str] = {}
        for modality, teacher in teachers.items():
            if isinstance(teacher, nn.Module):
                modules[str(modality)] = teacher
            elif isinstance(teacher, str | os.PathLike):
                self.teacher_files[str(modality)] = os.fspath(teacher)
            else:
                raise ValueError(
                    f"method 'umt': teachers[{modality!r}] must be an nn.Module or a checkpoint path, "
                    f"got {type(teacher).__name__}"
                )
        self.teachers = nn.ModuleDict(modules)
        self.teachers.requires_grad_(False)
        self.teachers.eval()
        self.scaling = float(scaling)

    def train(self, mode: bool = True) -> UMT:
        """Switch the method's mode; the teachers stay in eval mode (frozen statistics, no dropout)."""
        super().train(mode)
        self.teachers.eval()
        return self

    def check(self, model: nn.Module, *, held_out: bool = False) -> None:
        """The base checks, then one loaded teacher for each of the model's modalities."""
        super().check(model, held_out=held_out)
        if self.teacher_files:
            raise MethodRequirementError(
                f"method 'umt': the teachers of {sorted(self.teacher_files)} are file names "
                f"({self.teacher_files}), not loaded modules; the trainer loads them "
                "(modbalance.train.teachers.load_teachers), in your own loop pass nn.Modules"
            )
        modalities: list[str] = list(model.modalities)  # type: ignore[arg-type]  # checked above
        if sorted(self.teachers) != sorted(modalities):
            missing = sorted(set(modalities) - set(self.teachers))
            extra = sorted(set(self.teachers) - set(modalities))
            raise MethodRequirementError(
                f"method 'umt' needs one teacher per modality of the model ({modalities}); "
                f"missing: {missing}, not in the model: {extra}. Set method.options.teachers.<modality> for each"
            )

    def distances(self, out: ModelOutput, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Modality name -> 0-d mean squared distance between student and teacher features (fp32).

        Raises:
            ValueError: a teacher's features do not have the student's ``(B, D_m)`` shape.
        """
        found: dict[str, Tensor] = {}
        for m, teacher in self.teachers.items():
            with torch.no_grad():
                target = teacher(inputs[m])
            student = out.features[m]
            if target.shape != student.shape:
                raise ValueError(
                    f"method 'umt': the {m!r} teacher gives features of shape {tuple(target.shape)}, the model's "
                    f"encoder {tuple(student.shape)}; the teacher must have the student's encoder architecture"
                )
            found[m] = F.mse_loss(student.float(), target.float())
        return found

    def compute_loss(
        self,
        model: MultimodalClassifier,
        out: ModelOutput,
        target: Tensor,
        *,
        epoch: int | None = None,
        inputs: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """Cross-entropy of the fused logits plus ``scaling`` times the summed feature distances."""
        if inputs is None:
            raise ValueError("method 'umt' runs its teachers on the batch: call loss(..., inputs=inputs)")
        loss = F.cross_entropy(out.logits.float(), target)
        for distance in self.distances(out, inputs).values():
            loss = loss + self.scaling * distance
        return loss

    def extra_repr(self) -> str:
        return f"scaling={self.scaling}, teachers={sorted(self.teachers)}, {super().extra_repr()}"
