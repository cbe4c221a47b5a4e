"""Which frames of a clip a loader reads (docs/datasets.md), and per-sample random generators.

Train-time draws come from a ``torch.Generator`` seeded from ``(seed, epoch, index)``, so a sample's
frames and crops do not depend on the number of DataLoader workers or on the order samples are read.
Eval-time choices are deterministic.
"""

from __future__ import annotations

import torch

#: Frame-sampling rules a dataset accepts (option ``frame_sampling``).
FRAME_SAMPLING: tuple[str, ...] = ("segment", "first", "balancebench", "ends")


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator whose state depends only on ``(seed, epoch, index)``.

    Example:
        >>> a = torch.rand(2, generator=sample_generator(0, 1, 5))
        >>> b = torch.rand(2, generator=sample_generator(0, 1, 5))
        >>> bool(torch.equal(a, b)), bool(torch.equal(a, torch.rand(2, generator=sample_generator(0, 2, 5))))
        (True, False)
    """
    # Mix the three numbers with distinct large odd multipliers (a SplitMix-style hash), then keep 63 bits.
    mixed = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & (2**63 - 1)
    generator = torch.Generator()
    generator.manual_seed(mixed)
    return generator


def frame_indices(
    num_frames: int,
    count: int,
    *,
    train: bool,
    generator: torch.Generator | None = None,
    rule: str = "segment",
) -> list[int]:
    """Pick ``count`` of a clip's ``num_frames`` frames (0-based indices into the sorted frame list).

    Rules:

    * ``"segment"`` (default): split the clip into ``count`` equal segments; at eval take each
      segment's centre, ``floor((i + 1/2) · n / count)``; in training draw uniformly inside each segment.
      Clips with fewer frames than ``count`` repeat frames (evenly spread indices).
    * ``"first"``: the first ``count`` frames (what the OGM-GE CREMA-D loader meant to read, but over the
      sorted listing instead of the unsorted ``os.listdir``); the same in train and eval.
    * ``"balancebench"``: BalanceBench/InfoReg's 1-based formula with ``seg = n // count``: eval
      ``i·seg + max(seg // 2, 1)``, train ``randint(i·seg + 1, i·seg + seg)``, both capped at 9, then
      converted to 0-based (frames 1, 4, 7 of 10 at eval). The OGM-GE KS/AVE loader reads the same
      frames 1, 4, 7 (1-based), in train and eval.
    * ``"ends"``: evenly from the first to the last frame, ``floor(i · (n − 1) / (count − 1))``; for
      3 frames this is TPAMI's [0, (n − 1) // 2, n − 1] (first, middle, last), the same in train and eval
      (without the TPAMI loader's off-by-one read that rotates the clip).

    Args:
        num_frames: frames available (≥ 1).
        count: frames wanted (≥ 1).
        train: draw at random (needs ``generator``) instead of the deterministic choice.
        generator: the per-sample generator.
        rule: one of :data:`FRAME_SAMPLING`.

    Returns:
        ``count`` indices in [0, num_frames).

    Example:
        >>> frame_indices(10, 3, train=False)
        [1, 5, 8]
        >>> frame_indices(10, 3, train=False, rule="balancebench")
        [0, 3, 6]
        >>> frame_indices(2, 3, train=False)
        [0, 0, 1]
        >>> frame_indices(10, 3, train=True, rule="ends")
        [0, 4, 9]
    """
    if num_frames < 1 or count < 1:
        raise ValueError(f"need num_frames >= 1 and count >= 1, got {num_frames} and {count}")
    if rule not in FRAME_SAMPLING:
        raise ValueError(f"unknown frame_sampling {rule!r}; valid: {', '.join(FRAME_SAMPLING)}")
    if train and rule in ("segment", "balancebench") and generator is None:
        raise ValueError("train-time frame sampling needs a generator")
    if rule == "first":
        return [min(i, num_frames - 1) for i in range(count)]
    if rule == "ends":
        if count == 1:
            return [0]
        return [(i * (num_frames - 1)) // (count - 1) for i in range(count)]
    if rule == "balancebench":
        seg = num_frames // count
        if seg == 0:
            return [0] * count
        if train:
            assert generator is not None
            draws = torch.randint(0, seg, (count,), generator=generator).tolist()
            one_based = [i * seg + 1 + d for i, d in enumerate(draws)]
        else:
            one_based = [i * seg + max(seg // 2, 1) for i in range(count)]
        return [min(t, 9, num_frames) - 1 for t in one_based]
    if num_frames < count:
        return [(i * num_frames) // count for i in range(count)]
    if not train:
        return [int((i + 0.5) * num_frames / count) for i in range(count)]
    assert generator is not None
    bounds = [(i * num_frames) // count for i in range(count + 1)]
    draws = torch.rand(count, generator=generator).tolist()
    return [
        bounds[i] + min(int(d * (bounds[i + 1] - bounds[i])), bounds[i + 1] - bounds[i] - 1)
        for i, d in enumerate(draws)
    ]
