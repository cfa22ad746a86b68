"""DiffAugment: each transform against a plain reference, differentiability and seeding; ADA's probability and
its controller against StyleGAN2-ADA's rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthmed.training.augment import AdaptiveProbability, color, cutout, diff_augment, parse_policy, translation
from synthmed.training.distributed import Dist


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


def test_each_transform_reaches_a_share_p_of_the_images():
    x = torch.ones(2000, 1, 8, 8)
    policy = parse_policy("cutout")
    assert torch.equal(diff_augment(x, policy, torch.Generator().manual_seed(5), p=0.0), x)
    assert torch.equal(diff_augment(x, policy, torch.Generator().manual_seed(5), p=1.0),
                       cutout(x, torch.Generator().manual_seed(5)))
    cut = (diff_augment(x, policy, torch.Generator().manual_seed(5), p=0.3) == 0).flatten(1).any(dim=1)
    assert abs(cut.float().mean().item() - 0.3) < 0.04  # 2000 Bernoulli(0.3) draws: 4 standard errors
    # p as the controller's float64 buffer (what a training step passes) selects exactly the images a float p does
    as_buffer = diff_augment(x, policy, torch.Generator().manual_seed(5), p=torch.tensor(0.3, dtype=torch.float64))
    assert torch.equal(as_buffer, diff_augment(x, policy, torch.Generator().manual_seed(5), p=0.3))
    y = torch.randn(4, 1, 8, 8, requires_grad=True)  # the images it reaches still pass gradients back
    diff_augment(y, parse_policy("color,translation"), torch.Generator().manual_seed(6), p=0.5).sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0


def _reference_ada(p: float, signs: list[float], target: float, batch: int, images: int) -> float:
    """StyleGAN2-ADA's rule written out: every 4 steps, p += sign(mean sign - target) * 4 * batch / images, in [0, 1]."""
    for start in range(0, len(signs) - len(signs) % 4, 4):
        r_t = float(np.mean(signs[start : start + 4]))
        p = min(max(p + float(np.sign(r_t - target)) * 4 * batch / images, 0.0), 1.0)
    return p


@pytest.mark.parametrize("step_means", [
    [1.0] * 40,  # a critic sure of every real image: p climbs, and stops at 1
    [1.0] * 12 + [-1.0] * 20,  # then unsure: p falls back, and stops at 0
    [0.5, 0.75, 1.0, 0.25] * 6 + [0.0] * 3,  # around the target; the last three steps are not yet counted
])
def test_the_controller_follows_stylegan2_adas_rule(step_means):
    batch, images = 8, 200
    ada = AdaptiveProbability(target=0.6, images=images)
    signs_seen = []
    for mean in step_means:  # a batch whose share of positive outputs gives this mean sign
        positive = round((mean + 1) / 2 * batch)
        scores = torch.tensor([0.3] * positive + [-0.7] * (batch - positive))
        signs_seen.append(float(scores.sign().mean()))
        ada.observe(scores, Dist())
    assert float(ada.p) == pytest.approx(_reference_ada(0.0, signs_seen, 0.6, batch, images))
    last = len(step_means) - len(step_means) % 4
    assert float(ada.r_t) == pytest.approx(np.mean(signs_seen[last - 4 : last]))  # the last adjustment's r_t
    assert ada.steps == len(step_means) % AdaptiveProbability.INTERVAL


def test_the_controller_resumes_mid_interval_from_its_state_dict():
    """A checkpoint taken between adjustments carries the steps already counted (extra state), so the restored
    controller adjusts on the same step as the one it was copied from."""
    sure = torch.ones(8)
    ada = AdaptiveProbability(target=0.6, images=200)
    for _ in range(6):  # one adjustment, then two steps towards the next
        ada.observe(sure, Dist())
    restored = AdaptiveProbability(target=0.6, images=200)
    restored.load_state_dict(ada.state_dict())
    assert restored.steps == 2 and torch.equal(restored.p, ada.p)
    for controller in (ada, restored):
        controller.observe(sure, Dist())
        controller.observe(sure, Dist())
    assert float(restored.p) == float(ada.p) == pytest.approx(2 * 4 * 8 / 200)


def test_a_critic_with_several_outputs_per_image_moves_p_by_images_not_outputs():
    """The projected critic gives each image one logit per scale: r_t is the mean of each image's mean sign, and p
    moves by the images seen, as with one output per image."""
    one, four = AdaptiveProbability(target=0.6, images=200), AdaptiveProbability(target=0.6, images=200)
    for _ in range(4):
        one.observe(torch.tensor([1.0] * 6 + [-1.0] * 2), Dist())  # 8 images, mean sign 0.5
        four.observe(torch.tensor([[1.0, 1, 1, 1]] * 6 + [[1.0, 1, -1, -1]] * 2), Dist())  # 8 images, mean sign 0.75
    assert float(one.p) == 0.0 and float(one.r_t) == 0.5
    assert float(four.p) == pytest.approx(4 * 8 / 200) and float(four.r_t) == 0.75
