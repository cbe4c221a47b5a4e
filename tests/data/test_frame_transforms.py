"""Frame choice, per-sample generators and the PIL+torch image/flow transforms."""

import numpy as np
import pytest
import torch
from PIL import Image

from modbalance.data.sampling import frame_indices, sample_generator
from modbalance.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClipTransform,
    FlowTransform,
    center_crop_box,
    random_resized_crop_box,
)


def test_eval_frames_are_segment_centres() -> None:
    assert frame_indices(10, 3, train=False) == [1, 5, 8]  # floor(5/3), floor(15/3), floor(25/3)
    assert frame_indices(3, 1, train=False) == [1]
    assert frame_indices(7, 2, train=False) == [1, 5]  # floor(1.75), floor(5.25)
    assert frame_indices(2, 4, train=False) == [0, 0, 1, 1]


def test_balancebench_rule_reproduces_frames_1_4_7() -> None:
    assert [i + 1 for i in frame_indices(10, 3, train=False, rule="balancebench")] == [1, 4, 7]
    assert frame_indices(6, 3, train=False, rule="balancebench") == [0, 2, 4]  # seg 2: 1-based 1, 3, 5
    draws = {
        tuple(frame_indices(30, 3, train=True, generator=sample_generator(0, 0, i), rule="balancebench"))
        for i in range(200)
    }
    assert max(max(d) for d in draws) == 8  # capped at frame 9 (1-based)


def test_train_frames_stay_in_their_segment_and_cover_it() -> None:
    seen = [set() for _ in range(3)]
    for index in range(300):
        picks = frame_indices(10, 3, train=True, generator=sample_generator(7, 0, index))
        for segment, pick in enumerate(picks):
            seen[segment].add(pick)
    assert seen == [{0, 1, 2}, {3, 4, 5}, {6, 7, 8, 9}]


def test_generators_depend_only_on_seed_epoch_index() -> None:
    def draw(seed, epoch, index):
        return torch.rand(3, generator=sample_generator(seed, epoch, index))

    assert torch.equal(draw(0, 0, 5), draw(0, 0, 5))
    assert not torch.equal(draw(0, 0, 5), draw(0, 1, 5))
    assert not torch.equal(draw(0, 0, 5), draw(0, 0, 6))
    assert not torch.equal(draw(0, 0, 5), draw(1, 0, 5))


def test_frame_sampling_rejects_unknown_rules_and_missing_generators() -> None:
    with pytest.raises(ValueError, match="unknown frame_sampling 'random'; valid: segment, first, balancebench"):
        frame_indices(10, 3, train=False, rule="random")
    with pytest.raises(ValueError, match="needs a generator"):
        frame_indices(10, 3, train=True)


def test_random_resized_crop_area_and_ratio_are_in_range() -> None:
    generator = torch.Generator().manual_seed(0)
    areas, ratios = [], []
    for _ in range(400):
        left, top, right, bottom = random_resized_crop_box(320, 240, generator, (0.25, 1.0), (3 / 4, 4 / 3))
        assert 0 <= left < right <= 320 and 0 <= top < bottom <= 240
        areas.append((right - left) * (bottom - top) / (320 * 240))
        ratios.append((right - left) / (bottom - top))
    assert min(areas) >= 0.24 and max(areas) <= 1.0
    assert min(ratios) >= 0.74 and max(ratios) <= 1.35
    assert np.mean(areas) < 0.75  # not always the fallback full-frame box


def test_center_crop_box_matches_hand_values() -> None:
    assert center_crop_box(149, 112, 112) == (18, 0, 130, 112)  # round(37 / 2) = 18 (banker's rounding)


def test_eval_transform_resizes_and_normalises_with_imagenet_statistics() -> None:
    frames = [Image.new("RGB", (64, 48), (255, 128, 0))] * 2
    clip = ClipTransform(size=16, train=False)(frames)
    assert clip.shape == (3, 2, 16, 16)
    expected = [(c / 255 - m) / s for c, m, s in zip((255, 128, 0), IMAGENET_MEAN, IMAGENET_STD)]
    torch.testing.assert_close(clip[:, 0, 0, 0], torch.tensor(expected), atol=1e-5, rtol=0)


def test_short_side_centre_crop_keeps_the_centre() -> None:
    image = Image.new("RGB", (300, 100), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 100, 100))  # white left third is cropped away
    clip = ClipTransform(size=100, train=False, eval_resize="short_center", normalize=False)([image])
    assert clip.shape == (3, 1, 100, 100) and float(clip.max()) == 0.0


def _textured(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8))


def test_per_clip_crops_are_shared_and_per_frame_crops_are_not() -> None:
    frames = [_textured(1)] * 4
    per_clip = ClipTransform(size=24, train=True)(frames, torch.Generator().manual_seed(3))
    assert all(torch.equal(per_clip[:, 0], per_clip[:, t]) for t in range(4))
    per_frame = ClipTransform(size=24, train=True, per_frame=True)(frames, torch.Generator().manual_seed(3))
    assert not all(torch.equal(per_frame[:, 0], per_frame[:, t]) for t in range(4))


def test_train_transform_is_reproducible_from_its_generator() -> None:
    frames = [_textured(2), _textured(3)]
    a = ClipTransform(size=24, train=True)(frames, torch.Generator().manual_seed(9))
    b = ClipTransform(size=24, train=True)(frames, torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="needs a generator"):
        ClipTransform(size=24, train=True)(frames)


def test_flip_happens_about_half_the_time() -> None:
    image = Image.new("RGB", (64, 48), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 32, 48))  # left half white
    transform = ClipTransform(size=8, train=True, scale=(1.0, 1.0), ratio=(64 / 48, 64 / 48), normalize=False)
    flips = sum(float(transform([image], sample_generator(0, 0, i))[0, 0, 4, 0]) < 0.5 for i in range(400))
    assert 160 < flips < 240  # Binomial(400, 1/2): mean 200, sd 10


def test_flow_flip_negates_u_and_mirrors_both() -> None:
    u = Image.fromarray(np.tile(np.linspace(0, 255, 64).astype(np.uint8), (48, 1)))  # u grows to the right
    v = Image.fromarray(np.full((48, 64), 60, dtype=np.uint8))
    plain = FlowTransform(size=16, train=False)([u], [v])
    transform = FlowTransform(size=16, train=True)
    flipped = None
    for index in range(20):
        out = transform([u], [v], sample_generator(0, 0, index))
        if not torch.allclose(out, plain):
            flipped = out
            break
    assert flipped is not None
    torch.testing.assert_close(flipped[0], 1.0 - plain[0].flip(-1))  # mirrored and negated: 255 - u
    torch.testing.assert_close(flipped[1], plain[1].flip(-1))
    assert plain.shape == (2, 1, 16, 16)


def test_flow_three_channels_stack_u_v_u() -> None:
    u = Image.new("L", (32, 32), 10)
    v = Image.new("L", (32, 32), 200)
    out = FlowTransform(size=8, channels=3)([u, u], [v, v])
    assert out.shape == (3, 2, 8, 8)
    assert torch.equal(out[0], out[2]) and not torch.equal(out[0], out[1])
