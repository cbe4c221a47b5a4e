"""OGM and OGM-GE: on-the-fly gradient modulation, as a plug-in called between backward and step.

Reference: Peng, Wei, Deng, Wang, Hu, "Balanced Multimodal Learning via On-the-fly Gradient
Modulation", CVPR 2022, and its TPAMI 2024 extension. Deviations from the official code, each
deliberate: explicit per-modality parameter groups instead of name matching (the official
selection silently matches nothing without DataParallel's ``module.`` prefix); every parameter
of a modality is modulated unless ``param_filter="conv"`` asks for the official 4-D rule; ties
modulate nothing; scores, coefficients and noise are computed on the device with a dedicated
generator and a constant number of host synchronisations per step; under DDP the scores are
all-reduced and the noise generator is seeded identically on every rank.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor, nn

from modbalance import _distributed
from modbalance.imbalance import (
    COEFFICIENTS,
    RATIO_RULES,
    Coefficient,
    RatioRule,
    _check_logits,
    _coefficient_vector,
    _raise_on_flags,
    _ratio_vector,
    _score_vector,
)

__all__ = ["OGM", "SPACES", "ParamFilter", "modality_parameter_groups"]

Space = Literal["gradient", "update"]
#: Names accepted by ``OGM(space=...)``.
SPACES: tuple[str, ...] = ("gradient", "update")

#: ``None`` (every parameter), ``"conv"`` (only 4-D kernels, the official choice) or a predicate.
ParamFilter = str | Callable[[nn.Parameter], bool] | None

#: Independent GE noise streams on CPU (fixed: the noise never depends on the thread count).
NOISE_STREAMS = 4
#: Above this ``mean^2 / var`` the GE sigma is recomputed with ``torch.std`` (cancellation guard).
_ILL_CONDITIONED = 100.0

#: Optimizers whose per-parameter normalisation largely cancels a gradient scale.
_ADAPTIVE = (
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.Adamax,
    torch.optim.NAdam,
    torch.optim.RAdam,
    torch.optim.Adagrad,
    torch.optim.RMSprop,
    torch.optim.Adadelta,
)


def _select(param_filter: ParamFilter) -> Callable[[nn.Parameter], bool]:
    if param_filter is None:
        return lambda p: True
    if param_filter == "conv":
        return lambda p: p.dim() == 4
    if callable(param_filter):
        return param_filter
    raise ValueError(f"param_filter must be None, 'conv' or a callable, got {param_filter!r}")


def _by_device(tensors: list[Tensor]) -> dict[torch.device, list[int]]:
    by_device: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    return by_device


def _partition(sizes: list[int], count: int) -> list[list[int]]:
    """Split indices into ``count`` groups of similar total size (largest first), each in index order.

    Depends on the sizes only, so the same model always gives the same groups.
    """
    loads, groups = [0] * count, [[] for _ in range(count)]  # type: list[int], list[list[int]]
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        lightest = loads.index(min(loads))
        loads[lightest] += sizes[i]
        groups[lightest].append(i)
    return [sorted(group) for group in groups]


def _in_parallel(tasks: Sequence[Callable[[], Any]], threads: int) -> list[Any]:
    """Run ``tasks`` (torch work that releases the GIL) on up to ``threads`` threads; return their results."""
    results: list[Any] = [None] * len(tasks)
    errors: list[BaseException] = []

    def work(indices: range) -> None:
        try:
            for i in indices:
                results[i] = tasks[i]()
        except BaseException as error:  # re-raised in the calling thread
            errors.append(error)

    threads = max(1, min(threads, len(tasks)))
    share = [range(t, len(tasks), threads) for t in range(threads)]
    helpers = [threading.Thread(target=work, args=(indices,)) for indices in share[1:]]
    for helper in helpers:
        helper.start()
    work(share[0])
    for helper in helpers:
        helper.join()
    if errors:
        raise errors[0]
    return results


def _sigmas(grads: list[Tensor]) -> Tensor:
    """Unbiased std per tensor from one grouped norm and one sum each; ``-1`` where the mean dominates."""
    if not grads:
        return torch.zeros(0)
    # At least float32 (half gradients accumulate in float32), float64 where a gradient is float64.
    dtype = torch.float64 if any(g.dtype == torch.float64 for g in grads) else torch.float32
    with torch.no_grad():
        squares = torch.stack(torch._foreach_norm(grads, 2, dtype=dtype)).square()
        sums = torch.stack([g.sum(dtype=dtype) for g in grads])
        n = torch.tensor([g.numel() for g in grads], dtype=dtype, device=sums.device)
        mean_square = sums.square() / n
        var = (squares - mean_square) / (n - 1).clamp_min(1)
        var = torch.where(n > 1, var, torch.zeros_like(var))
        ill = (n > 1) & ((mean_square / n) > _ILL_CONDITIONED * var)
        return torch.where(ill, torch.full_like(var, -1.0), var.clamp_min(0).sqrt())


def _draw_and_add(
    grads: list[Tensor], views: list[Tensor], sigmas: list[float], scales: list[float], generator: torch.Generator
) -> None:
    """``g <- scale * g + N(0, (sigma + 1e-8)^2)`` per tensor, the noise drawn at its scale into ``views``."""
    with torch.no_grad():
        for g, view, sigma, scale in zip(grads, views, sigmas, scales, strict=True):
            if sigma < 0:  # ill-conditioned: the exact std, kept on the device
                view.normal_(generator=generator).mul_(g.float().std() + 1e-8)
            elif math.isfinite(sigma):
                view.normal_(0.0, sigma + 1e-8, generator=generator)
            else:  # a non-finite gradient: the noise is NaN, as torch.std would make it
                view.fill_(math.nan)
            if scale == 1.0:
                g.add_(view)
            else:
                torch.add(view, g, alpha=scale, out=g)


def modality_parameter_groups(
    modality_params: Mapping[str, nn.Module | Iterable[nn.Parameter]] | nn.ModuleDict, param_filter: ParamFilter = None
) -> dict[str, list[nn.Parameter]]:
    """Resolve ``{modality: module or parameters}`` into checked lists of trainable parameters.

    ``modality_params`` is any mapping, or an ``nn.ModuleDict`` (such as
    :attr:`MultimodalClassifier.encoders <modbalance.MultimodalClassifier>`), which is not a
    ``Mapping`` to Python but is accepted the same way.

    Raises:
        ValueError: fewer than two modalities, a modality with no trainable parameter left after
            the filter (the official code's silent no-op), or a parameter mapped to two modalities.

    Example:
        >>> from torch import nn
        >>> groups = modality_parameter_groups({"audio": nn.Linear(2, 2), "visual": nn.Conv2d(1, 1, 3)}, "conv")
        Traceback (most recent call last):
        ...
        ValueError: modality 'audio' has no trainable parameter to modulate after param_filter='conv' ...
    """
    if isinstance(modality_params, nn.ModuleDict):
        modality_params = dict(modality_params.items())
    if not isinstance(modality_params, Mapping):
        raise TypeError(
            "OGM needs a mapping {modality: module or parameters} (a dict or nn.ModuleDict), "
            f"got {type(modality_params).__name__}"
        )
    if len(modality_params) < 2:
        raise ValueError(f"OGM needs at least two modalities, got {list(modality_params)!r}")
    keep = _select(param_filter)
    groups: dict[str, list[nn.Parameter]] = {}
    owner: dict[int, str] = {}
    for name, source in modality_params.items():
        params = list(source.parameters()) if isinstance(source, nn.Module) else list(source)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"modality {name!r}: expected parameters, got {type(p).__name__}")
        chosen = [p for p in params if p.requires_grad and keep(p)]
        if not chosen:
            raise ValueError(
                f"modality {name!r} has no trainable parameter to modulate after param_filter={param_filter!r} "
                f"({len(params)} parameters given); OGM would silently do nothing for it"
            )
        for p in chosen:
            if id(p) in owner:
                raise ValueError(
                    f"a parameter of shape {tuple(p.shape)} is mapped to both {owner[id(p)]!r} and {name!r}"
                )
            owner[id(p)] = name
        groups[name] = chosen
    return groups


class OGM:
    r"""On-the-fly gradient modulation (OGM), and OGM-GE with ``noise=True``.

    After ``loss.backward()`` and before ``optimizer.step()``, :meth:`modulate` measures each
    modality's confidence in the true class (:func:`~modbalance.unimodal_scores`), forms the
    discrepancy ratios :math:`\rho_m`, and multiplies the gradients of each dominant modality
    (:math:`\rho_m > 1`) by :math:`k_m < 1`. With ``noise=True`` (GE, generalisation
    enhancement) every selected gradient becomes :math:`k\,g + \varepsilon`,
    :math:`\varepsilon \sim \mathcal N(0, (\sigma + 10^{-8})^2)` element-wise, where
    :math:`\sigma` is the unbiased standard deviation of the *un-modulated* gradient tensor (0 for
    one-element tensors), on every modality including those with :math:`k = 1`, as in the
    official code.

    Args:
        modality_params: modality name -> ``nn.Module`` or iterable of parameters (its encoder);
            a dict or an ``nn.ModuleDict`` (e.g. ``model.encoders``).
        alpha: modulation strength :math:`\alpha \ge 0`.
        noise: add the GE noise (OGM-GE).
        coefficient: ``"reference"``, ``"shifted"`` or ``"paper"`` (see
            :func:`~modbalance.ogm_coefficients`).
        start_epoch: first epoch (inclusive) in which modulation acts, when ``epoch`` is given.
        end_epoch: last epoch (inclusive); ``None`` means no end.
        param_filter: ``None`` modulates every parameter mapped to a modality; ``"conv"``
            reproduces the official choice of 4-D kernels only; a callable selects.
        generator: ``torch.Generator`` for the GE noise, on the gradients' device. ``None``
            creates one seeded from the global RNG (from rank 0's global RNG under DDP).
        rule: ratio rule for M > 2 (see :func:`~modbalance.discrepancy_ratios`).
        sync: all-reduce the scores across ranks; ``None`` does so whenever
            ``torch.distributed`` is initialised.
        space: ``"gradient"`` (the official method) multiplies the dominant modality's gradients
            by k; ``"update"`` leaves them alone and multiplies that modality's *parameter update*
            by k instead, through step hooks on the optimizer passed to :meth:`modulate`. Under
            Adam-family optimizers, which divide a gradient scale back out, only ``"update"``
            keeps the intended effect. With SGD and no momentum or weight decay both are equal.
        ratio_eps: added to every ratio's denominator; BalanceBenchmark's OGM trainer adds
            ``1e-5`` (``balancemm/trainer/OGM_trainer.py`` line 132 at commit ``d7675c1``); the
            default 0 keeps the exact ratio of the CVPR 2022 and TPAMI 2024 code.

    Mixed precision: gradients must be unscaled before modulation. Pass ``scaler=`` and
    ``optimizer=`` to :meth:`modulate` and it calls ``scaler.unscale_(optimizer)`` first (do not
    call it yourself as well), then ``scaler.step(optimizer)`` as usual.

    Adam-family optimizers normalise each parameter by its running second moment, which largely
    cancels a slowly varying gradient scale; in gradient space OGM warns once when it sees one
    (pass ``optimizer=``), and ``space="update"`` is the remedy. See ``docs/methods.md``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> audio, visual = nn.Linear(4, 3), nn.Linear(4, 3)
        >>> ogm = OGM({"audio": audio, "visual": visual}, alpha=0.5)
        >>> x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
        >>> logits = {"audio": audio(x) * 5, "visual": visual(x) * 0}
        >>> nn.functional.cross_entropy(logits["audio"] + logits["visual"], y).backward()
        >>> k = ogm.modulate(logits, y)   # scales the dominant modality's gradients in place
        >>> sorted(k), k["visual"] == 1.0 or k["audio"] == 1.0
        (['audio', 'visual'], True)
    """

    #: Threads for the GE noise on CPU; ``None``: one per available core, at most
    #: :data:`NOISE_STREAMS`. The noise values do not depend on it.
    noise_threads: int | None = None

    def __init__(
        self,
        modality_params: Mapping[str, nn.Module | Iterable[nn.Parameter]] | nn.ModuleDict,
        alpha: float,
        *,
        noise: bool = False,
        coefficient: Coefficient = "reference",
        start_epoch: int = 0,
        end_epoch: int | None = None,
        param_filter: ParamFilter = None,
        generator: torch.Generator | None = None,
        rule: RatioRule = "mean_pairwise",
        sync: bool | None = None,
        space: Space = "gradient",
        ratio_eps: float = 0.0,
    ) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        if coefficient not in COEFFICIENTS:
            raise ValueError(f"Unknown OGM coefficient {coefficient!r}. Available: {', '.join(COEFFICIENTS)}")
        if rule not in RATIO_RULES:
            raise ValueError(f"Unknown ratio rule {rule!r}. Available: {', '.join(RATIO_RULES)}")
        if start_epoch < 0 or (end_epoch is not None and end_epoch < start_epoch):
            raise ValueError(
                f"need 0 <= start_epoch <= end_epoch, got start_epoch={start_epoch}, end_epoch={end_epoch}"
            )
        if (
            isinstance(ratio_eps, bool)
            or not isinstance(ratio_eps, (int, float))
            or not math.isfinite(ratio_eps)
            or ratio_eps < 0
        ):
            raise ValueError(f"ratio_eps must be a finite number >= 0, got {ratio_eps!r}")
        self.ratio_eps = float(ratio_eps)
        self.groups = modality_parameter_groups(modality_params, param_filter)
        self.modalities = list(self.groups)
        self.alpha = float(alpha)
        self.noise = bool(noise)
        self.coefficient = coefficient
        self.start_epoch = start_epoch
        self.end_epoch = end_epoch
        self.rule = rule
        self.sync = sync
        if space not in SPACES:
            raise ValueError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
        self.space: Space = space
        self._hooked: torch.optim.Optimizer | None = None
        self._pending: dict[str, float] = {}
        self._snapshot: dict[str, list[Tensor]] = {}
        self.generator = generator
        self._noise_buffers: dict[torch.device, Tensor] = {}  # reused every step; not state
        self._stream_generators: list[torch.Generator] = []  # reseeded from ``generator`` every step
        self._accumulated: Tensor | None = None
        self._bad_target: Tensor | None = None
        self._warned_adaptive = False
        #: Ratios and coefficients of the last :meth:`modulate` call, as Python floats.
        self.last_ratios: dict[str, float] = {}
        self.last_coefficients: dict[str, float] = {}

    # ------------------------------------------------------------------ scores
    def active(self, epoch: int | None) -> bool:
        """Whether ``epoch`` lies in the inclusive modulation window (``None``: always)."""
        if epoch is None:
            return True
        return epoch >= self.start_epoch and (self.end_epoch is None or epoch <= self.end_epoch)

    def accumulate(self, unimodal_logits: Mapping[str, Tensor], target: Tensor) -> None:
        """Add one micro-batch's scores, for gradient accumulation (no synchronisation).

        Call it for every micro-batch but the last, then :meth:`modulate` with the last one; the
        coefficients are computed from the scores summed over all of them.
        """
        _check_logits(unimodal_logits, target)
        missing = set(self.modalities) ^ set(unimodal_logits)
        if missing:
            raise ValueError(
                f"unimodal_logits keys {sorted(unimodal_logits)} do not match the OGM modalities {self.modalities}"
            )
        ordered = {name: unimodal_logits[name] for name in self.modalities}
        scores, bad_target = _score_vector(ordered, target)
        if self._accumulated is None or self._bad_target is None:
            self._accumulated, self._bad_target = scores, bad_target
        else:
            self._accumulated = self._accumulated + scores
            self._bad_target = self._bad_target | bad_target

    # ------------------------------------------------------------------ modulation
    def modulate(
        self,
        unimodal_logits: Mapping[str, Tensor] | None = None,
        target: Tensor | None = None,
        *,
        epoch: int | None = None,
        scaler: Any = None,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> dict[str, float]:
        """Modulate the gradients in place; return each modality's coefficient ``k``.

        Args:
            unimodal_logits: modality name -> ``(B, C)`` logits of this (micro-)batch. May be
                omitted when :meth:`accumulate` already received every micro-batch.
            target: ``(B,)`` class indices.
            epoch: current epoch, compared with the window; ``None`` means always active.
            scaler: a ``torch.amp.GradScaler``; its ``unscale_(optimizer)`` is called first.
            optimizer: needed with ``scaler`` and with ``space="update"``; also lets OGM warn
                about Adam-family optimizers in gradient space.

        Returns:
            modality name -> coefficient ``k`` as a float (1.0 outside the window).

        Costs one host synchronisation (plus one all-reduce under DDP).
        """
        if self.space == "update":
            self._hook(optimizer)
        elif optimizer is not None:
            self._warn_if_adaptive(optimizer)
        self._pending = {}
        if scaler is not None:
            if optimizer is None:
                raise ValueError("modulate(scaler=...) needs optimizer= to unscale its gradients first")
            scaler.unscale_(optimizer)
        if unimodal_logits is not None:
            if target is None:
                raise ValueError("modulate() got unimodal_logits without target")
            self.accumulate(unimodal_logits, target)
        if self._accumulated is None or self._bad_target is None:
            raise ValueError("modulate() needs unimodal_logits and target (or earlier accumulate() calls)")
        scores, bad_target = self._accumulated, self._bad_target
        self._accumulated = self._bad_target = None
        if not self.active(epoch):
            self.last_ratios = {}
            self.last_coefficients = dict.fromkeys(self.modalities, 1.0)
            return dict(self.last_coefficients)

        if _distributed.resolve_sync(self.sync):
            packed = _distributed.all_reduce_sum(torch.cat([scores, bad_target.reshape(1).float()]))
            scores, bad_target = packed[:-1], packed[-1] > 0
        ratios = _ratio_vector(scores, self.rule, self.ratio_eps)
        coefficients = _coefficient_vector(ratios, self.alpha, self.coefficient)
        grads = {name: [p.grad for p in self.groups[name] if p.grad is not None] for name in self.modalities}
        flat = [g for name in self.modalities for g in grads[name]]
        # The noise scale depends on the un-modulated gradients only: compute it before the host
        # sync and bring it to the host with the coefficients (the draw needs it as a number).
        sigmas = self._noise_sigmas(flat).to(scores.device) if self.noise and flat else scores.new_zeros(0)
        m = len(self.modalities)
        host = torch.cat(
            [bad_target.reshape(1).float(), torch.isfinite(scores).float(), ratios, coefficients, sigmas]
        ).tolist()
        _raise_on_flags(self.modalities, bool(host[0]), [bool(f) for f in host[1 : 1 + m]], "uni-modal logits")
        self.last_ratios = dict(zip(self.modalities, host[1 + m : 1 + 2 * m], strict=True))
        self.last_coefficients = dict(zip(self.modalities, host[1 + 2 * m : 1 + 3 * m], strict=True))

        scales: list[float] = []
        for name, k in self.last_coefficients.items():
            group = grads[name]
            if self.space == "update":
                if k != 1.0:
                    self._pending[name] = k  # applied to the update by the optimizer's step hooks
                k = 1.0
            if self.noise:
                scales.extend([k] * len(group))
            elif group and k != 1.0:
                torch._foreach_mul_(group, k)
        if self.noise and flat:
            self._add_noise(flat, host[1 + 3 * m :], scales)
        return dict(self.last_coefficients)

    def _noise_sigmas(self, grads: list[Tensor]) -> Tensor:
        """``(N,)`` float32 (float64 for float64 gradients): each gradient's unbiased std, from sums.

        One grouped norm (``_foreach_norm``) and one sum per tensor, split over the CPU streams:
        ``var = (sum(g^2) - sum(g)^2 / n) / (n - 1)``, 0 for one-element tensors. Where the mean
        dominates (``mean^2 > 100 var``, cancellation would cost digits), the value is ``-1``:
        :meth:`_add_noise` then takes ``torch.std`` of that tensor instead. No host sync.
        """
        dtype = torch.float64 if any(g.dtype == torch.float64 for g in grads) else torch.float32
        sigmas = torch.zeros(len(grads), dtype=dtype, device=grads[0].device)
        for device, indices in _by_device(grads).items():
            streams = _partition([grads[i].numel() for i in indices], NOISE_STREAMS if device.type == "cpu" else 1)
            chunks = [[indices[j] for j in stream] for stream in streams]
            tasks = [partial(_sigmas, [grads[i] for i in chunk]) for chunk in chunks]
            for chunk, values in zip(chunks, _in_parallel(tasks, self._threads()), strict=True):
                sigmas[chunk] = values.to(sigmas.device, sigmas.dtype)
        return sigmas

    def _add_noise(self, grads: list[Tensor], sigmas: list[float], scales: list[float]) -> None:
        """``g <- scale * g + eps``, ``eps ~ N(0, (sigma + 1e-8)^2)``, drawn in place into a reused buffer.

        On CPU the tensors are split into :data:`NOISE_STREAMS` fixed groups (by size), each drawn
        from its own generator, seeded for this step from :attr:`generator`; the groups run on up to
        :attr:`noise_threads` threads, which changes the speed, never the values. On other devices
        one generator draws every tensor.
        """
        for device, indices in _by_device(grads).items():
            generator = self._generator_for(device)
            views = self._noise_views(device, [grads[i].shape for i in indices])
            if device.type != "cpu":
                on_device = [grads[i] for i in indices]
                _draw_and_add(on_device, views, [sigmas[i] for i in indices], [scales[i] for i in indices], generator)
                continue
            seeds = torch.randint(0, 2**62, (NOISE_STREAMS,), generator=generator).tolist()
            while len(self._stream_generators) < NOISE_STREAMS:
                self._stream_generators.append(torch.Generator())
            streams = _partition([grads[i].numel() for i in indices], NOISE_STREAMS)
            tasks = []
            for stream, seed, stream_generator in zip(streams, seeds, self._stream_generators, strict=True):
                stream_generator.manual_seed(seed)
                chosen = [indices[j] for j in stream]
                tasks.append(
                    partial(
                        _draw_and_add,
                        [grads[i] for i in chosen],
                        [views[j] for j in stream],
                        [sigmas[i] for i in chosen],
                        [scales[i] for i in chosen],
                        stream_generator,
                    )
                )
            _in_parallel(tasks, self._threads())

    def _threads(self) -> int:
        if self.noise_threads is not None:
            return max(1, int(self.noise_threads))
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return min(NOISE_STREAMS, cores)

    def _noise_views(self, device: torch.device, shapes: list[torch.Size]) -> list[Tensor]:
        """Views shaped like ``shapes`` into this device's float32 noise buffer (grown when needed, not state)."""
        sizes = [math.prod(shape) for shape in shapes]
        buffer = self._noise_buffers.get(device)
        if buffer is None or buffer.numel() < sum(sizes):
            buffer = self._noise_buffers[device] = torch.empty(sum(sizes), device=device)
        return [chunk.view(shape) for chunk, shape in zip(buffer[: sum(sizes)].split(sizes), shapes, strict=True)]

    def _generator_for(self, device: torch.device) -> torch.Generator:
        self.generator = _distributed.shared_generator(self.generator, device, sync=self.sync, owner="OGM")
        return self.generator

    def _hook(self, optimizer: torch.optim.Optimizer | None) -> None:
        """Register the update-space step hooks on ``optimizer`` (once)."""
        if optimizer is None:
            raise ValueError("OGM(space='update') needs modulate(..., optimizer=...) to scale the parameter update")
        if self._hooked is optimizer:
            return
        if self._hooked is not None:
            raise ValueError("OGM(space='update') is already attached to another optimizer")
        optimizer.register_step_pre_hook(self._before_step)
        optimizer.register_step_post_hook(self._after_step)
        self._hooked = optimizer

    def _before_step(self, *_: Any) -> None:
        self._snapshot = {name: [p.detach().clone() for p in self.groups[name]] for name in self._pending}

    def _after_step(self, *_: Any) -> None:
        # theta <- theta_old + k (theta_new - theta_old), i.e. a lerp from the new value towards the old.
        for name, k in self._pending.items():
            params = [p.data for p in self.groups[name]]
            torch._foreach_lerp_(params, self._snapshot[name], 1.0 - k)
        self._pending, self._snapshot = {}, {}

    def _warn_if_adaptive(self, optimizer: torch.optim.Optimizer) -> None:
        if self._warned_adaptive or not isinstance(optimizer, _ADAPTIVE):
            return
        self._warned_adaptive = True
        warnings.warn(
            f"OGM with {type(optimizer).__name__}: adaptive optimizers divide each gradient by its running "
            "RMS, which largely cancels OGM's gradient scale k (only the change of k between steps survives). "
            "Expect a weaker effect than with SGD; see docs/methods.md.",
            UserWarning,
            stacklevel=3,
        )

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The random state of the GE noise (and nothing else: hyperparameters live in configs)."""
        if self.generator is None:
            return {"generator": None, "device": None}
        return {"generator": self.generator.get_state(), "device": str(self.generator.device)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; the noise stream then continues exactly."""
        if "generator" not in state:
            raise ValueError(f"OGM state dict needs key 'generator', got keys {sorted(state)}")
        generator_state = state["generator"]
        if generator_state is None:
            self.generator = None
            return
        device = torch.device(state.get("device") or "cpu")
        if self.generator is None or self.generator.device != device:
            self.generator = torch.Generator(device=device)
        self.generator.set_state(generator_state)

    def __repr__(self) -> str:
        return (
            f"OGM(modalities={self.modalities}, alpha={self.alpha}, noise={self.noise}, "
            f"coefficient={self.coefficient!r}, window=[{self.start_epoch}, {self.end_epoch}], rule={self.rule!r}, "
            f"ratio_eps={self.ratio_eps})"
        )
