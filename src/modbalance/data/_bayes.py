"""Exact Bayes-optimal accuracy for the imbalance lab's latent model.

Each modality m draws, given the class y (uniform over K classes), a latent
``z_m = s_m * e_{m,y} + n`` with ``n ~ N(0, I_L)`` and orthonormal class directions
``e_{m,1..K}``. The log-likelihood of class k is ``s_m <z_m, e_{m,k}> + const``, so for the
true class the statistic is ``s_m + n_y`` and for every other class it is an independent
``N(0, 1)`` variable. The Bayes classifier is right exactly when the first beats the
``K - 1`` others:

.. math::

    P(s, K) = \\int \\varphi(t) \\, \\Phi(t + s)^{K-1} \\, dt .

Modalities are conditionally independent given y, so the fused log-likelihood statistic
per class is ``sum_m s_m <z_m, e_{m,k}>``; dividing by ``S = sqrt(sum_m s_m^2)`` gives the
same form with ``s = S``. The same holds for any subset of modalities.

The integral is evaluated with the trapezoidal rule on a fine uniform grid in float64. For
an analytic integrand with Gaussian decay this rule converges geometrically, so the result
is accurate far beyond 1e-8 (``phi`` is below 1e-31 outside ``|t| <= 12``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

__all__ = ["fused_snr", "isotropic_bayes_accuracy"]

_HALF_RANGE = 12.0
_STEP = 0.005


def _check_snr(snr: float, name: str) -> float:
    if isinstance(snr, bool) or not isinstance(snr, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(snr).__name__}")
    value = float(snr)
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"{name} must be finite and >= 0, got {snr!r}")
    return value


def isotropic_bayes_accuracy(snr: float, num_classes: int) -> float:
    """Bayes-optimal accuracy for K equiprobable classes with orthonormal means times ``snr``.

    Computes ``P(s, K) = integral of phi(t) * Phi(t + s) ** (K - 1) dt`` in float64.

    Args:
        snr: The strength ``s >= 0`` (distance of each class mean from the origin, in noise
            standard deviations).
        num_classes: The number of classes ``K >= 2``.

    Returns:
        The probability that the Bayes classifier is right, in ``[1 / K, 1]``.

    Raises:
        TypeError: If ``snr`` is not a real number or ``num_classes`` is not an int.
        ValueError: If ``snr`` is negative or not finite, or ``num_classes < 2``.

    Example:
        >>> round(isotropic_bayes_accuracy(0.0, 4), 6)
        0.25
        >>> f"{isotropic_bayes_accuracy(2.0, 2):.6f}"  # equals Phi(2 / sqrt(2))
        '0.921350'
    """
    s = _check_snr(snr, "snr")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise TypeError(f"num_classes must be an int, got {type(num_classes).__name__}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    steps = round(2 * _HALF_RANGE / _STEP)
    t = torch.linspace(-_HALF_RANGE, _HALF_RANGE, steps + 1, dtype=torch.float64)
    log_integrand = -0.5 * t * t - 0.5 * math.log(2.0 * math.pi) + (num_classes - 1) * torch.special.log_ndtr(t + s)
    return float(torch.trapezoid(torch.exp(log_integrand), t))


def fused_snr(strengths: Iterable[float]) -> float:
    """The strength equivalent to several conditionally independent modalities.

    Args:
        strengths: The per-modality strengths ``s_m >= 0``.

    Returns:
        ``sqrt(sum_m s_m ** 2)``.

    Raises:
        ValueError: If ``strengths`` is empty or holds a negative or non-finite value.

    Example:
        >>> fused_snr([3.0, 4.0])
        5.0
    """
    values = [_check_snr(s, "strength") for s in strengths]
    if not values:
        raise ValueError("strengths must hold at least one value, got none")
    return math.sqrt(sum(v * v for v in values))
