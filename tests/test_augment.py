"""DiffAugment: each transform against a plain reference, differentiability and seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthmed.training.augment import color, cutout, diff_augment, parse_policy, translation


def test_policy_parsing_names_the_bad_entry():
    assert parse_policy(" translation, cutout ") == ("translation", "cutout")
    assert parse_policy("") == ()
    with pytest.raises(ValueError, match="'flip'"):
        parse_policy("color,flip")


def _shift_reference(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Pixel (i, j) of the output reads (i + dy, j + dx) of the input, zero outside."""
    h, w = image.shape[-2:]
    out = np.zeros_like(image)
    for i in range(h):
        for j in range(w):
            if 0 <= i + dy < h and 0 <= j + dx < w:
                out[..., i, j] = image[..., i + dy, j + dx]
    return out


def test_translation_is_a_zero_filled_integer_shift_of_at_most_an_eighth():
    x = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).reshape(2, 3, 16, 16) + 1
    out = translation(x, torch.Generator().manual_seed(0)).numpy()
    for n in range(2):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if np.array_equal(out[n], _shift_reference(x[n].numpy(), dy, dx))]
        assert len(matches) == 1, f"sample {n} is not one shift within 1/8 of the size"


def test_cutout_zeroes_one_half_size_square_per_sample_clipped_at_the_border():
    x = torch.ones(64, 1, 16, 16)
    out = cutout(x, torch.Generator().manual_seed(1))[:, 0].numpy()
    for image in out:
        rows, cols = np.nonzero(image == 0)
        top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
        assert (image[top : bottom + 1, left : right + 1] == 0).all() and len(rows) == (bottom - top + 1) * (right - left + 1)
        height, width = bottom - top + 1, right - left + 1
        assert height == 8 or top == 0 or bottom == 15
        assert width == 8 or left == 0 or right == 15
        assert height <= 8 and width <= 8


def test_color_keeps_an_image_of_one_value_flat_and_moves_its_brightness():
    x = torch.full((256, 1, 4, 4), 0.2)
    out = color(x, torch.Generator().manual_seed(2))
    assert torch.allclose(out, out[:, :, :1, :1].expand_as(out))  # contrast and saturation keep it flat
    shift = out[:, 0, 0, 0] - 0.2
    assert shift.min() >= -0.5 and shift.max() <= 0.5 and shift.std() > 0.2  # brightness U(-0.5, 0.5)


def test_augmentation_is_differentiable_and_seeded():
    x = torch.randn(4, 1, 16, 16, requires_grad=True)
    policy = parse_policy("color,translation,cutout")
    a = diff_augment(x, policy, torch.Generator().manual_seed(3))
    b = diff_augment(x, policy, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert not torch.equal(a, diff_augment(x, policy, torch.Generator().manual_seed(4)))
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
