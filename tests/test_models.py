"""The two conditional GANs: shapes, equalised LR, (conditional) pixel norm, minibatch std,
projection, prog-GAN growth and build_models validation. Tiny widths throughout."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from synthmed.models import build_models
from synthmed.models.layers import (
    ConditionalPixelNorm,
    EqualizedConv2d,
    EqualizedLinear,
    MinibatchStdDev,
    PixelNorm,
    channels_at,
)

TINY = {"latent_dim": 16, "channels_base": 256, "channels_max": 32}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def inputs(n: int, label_dim: int, latent_dim: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, latent_dim), (torch.rand(n, label_dim) < 0.5).float()


@pytest.mark.parametrize("name", ["cpdgan", "proggan"])
@pytest.mark.parametrize("resolution,label_dim,batch", [(8, 1, 5), (16, 2, 8), (32, 6, 5)])
def test_shapes_and_finite(name: str, resolution: int, label_dim: int, batch: int) -> None:
    g, d = build_models(name, resolution, label_dim, 1, **TINY)
    if name == "proggan":
        g.set_growth(resolution, 1.0)
        d.set_growth(resolution, 1.0)
    z, y = inputs(batch, label_dim)
    images = g(z, y)
    assert images.shape == (batch, 1, resolution, resolution) and torch.isfinite(images).all()
    score, logits = d(images, y)
    assert score.shape == (batch,) and torch.isfinite(score).all()
    assert logits is None if name == "cpdgan" else logits.shape == (batch, label_dim)
    assert g.latent_dim == 16 and g.label_dim == label_dim


@pytest.mark.parametrize("name", ["cpdgan", "proggan"])
def test_channels_last_gives_same_result(name: str) -> None:
    g, d = build_models(name, 16, 2, 3, **TINY)
    z, y = inputs(4, 2)
    size = 8 if name == "proggan" else 16  # prog-GAN starts at 8x8
    x = torch.randn(4, 3, size, size)
    expected_image, expected_score = g(z, y), d(x, y)[0]
    g, d = g.to(memory_format=torch.channels_last), d.to(memory_format=torch.channels_last)
    torch.testing.assert_close(g(z, y), expected_image)
    torch.testing.assert_close(d(x.contiguous(memory_format=torch.channels_last), y)[0], expected_score)


def test_equalized_lr_scales_weights_at_run_time() -> None:
    conv = EqualizedConv2d(8, 16, 3)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 8, 6, 6)
    expected = F.conv2d(x, conv.weight * math.sqrt(2) / math.sqrt(8 * 9), conv.bias, padding=1)
    torch.testing.assert_close(conv(x), expected)
    linear = EqualizedLinear(300, 200, gain=0.5)
    x = torch.randn(3, 300)
    torch.testing.assert_close(linear(x), x @ (linear.weight * 0.5 / math.sqrt(300)).T + linear.bias)
    # Stored weights ~ N(0, 1); hence the effective ones have std gain / sqrt(fan_in).
    w = linear.weight.detach()
    assert abs(w.mean()) < 0.02 and abs(w.std() - 1) < 0.02
    assert abs((w * linear.scale).std() / (0.5 / math.sqrt(300)) - 1) < 0.02
    assert torch.all(linear.bias == 0)


def test_pixel_norm() -> None:
    x = torch.randn(3, 5, 4, 4)
    out = PixelNorm()(x)
    torch.testing.assert_close(out.square().mean(dim=1), torch.ones(3, 4, 4), rtol=1e-4, atol=1e-4)


def test_conditional_pixel_norm() -> None:
    norm = ConditionalPixelNorm(channels=5, cond_dim=7)
    x, c = torch.randn(3, 5, 4, 4), torch.randn(3, 7)
    torch.testing.assert_close(norm(x, c), PixelNorm()(x))  # gamma = 1, beta = 0 at init
    with torch.no_grad():
        for p in norm.parameters():
            p.normal_()
    w_gamma, b_gamma = norm.gamma.weight / math.sqrt(7), norm.gamma.bias
    w_beta, b_beta = norm.beta.weight / math.sqrt(7), norm.beta.bias
    expected = torch.empty_like(x)
    for n in range(3):
        gamma = w_gamma @ c[n] + b_gamma
        beta = w_beta @ c[n] + b_beta
        for i in range(4):
            for j in range(4):
                a = x[n, :, i, j]
                expected[n, :, i, j] = a / torch.sqrt((a ** 2).sum() / 5 + 1e-8) * gamma + beta
    torch.testing.assert_close(norm(x, c), expected)


def hand_mbstd(x: torch.Tensor, groups: list[list[int]]) -> torch.Tensor:
    std = torch.empty(x.shape[0])
    for members in groups:
        g = x[members]
        var = ((g - g.mean(dim=0)) ** 2).mean(dim=0)
        std[members] = torch.sqrt(var + 1e-8).mean()
    return std


@pytest.mark.parametrize("n,groups", [
    (8, [[0, 1, 2, 3], [4, 5, 6, 7]]),
    (6, [[0, 1, 2, 3], [4, 5]]),           # a remainder of two forms its own group
    (9, [[0, 1, 2, 3], [4, 5, 6, 7, 8]]),  # a single leftover joins the last group
    (3, [[0, 1, 2]]),                      # fewer samples than the group size: one group
])
def test_minibatch_stddev(n: int, groups: list[list[int]]) -> None:
    x = torch.randn(n, 3, 4, 4)
    out = MinibatchStdDev(4)(x)
    assert out.shape == (n, 4, 4, 4)
    torch.testing.assert_close(out[:, :3], x)
    expected = hand_mbstd(x, groups)[:, None, None].expand(n, 4, 4)
    torch.testing.assert_close(out[:, 3], expected)


def test_projection_score_is_sum_over_active_labels() -> None:
    _, d = build_models("cpdgan", 16, 6, 1, **TINY)
    captured = {}
    d.epilogue.out.register_forward_hook(lambda module, args, output: captured.update(out=output))
    x, y = torch.randn(5, 1, 16, 16), (torch.rand(5, 6) < 0.5).float()
    y[0] = 0
    score, _ = d(x, y)
    torch.testing.assert_close(score, (captured["out"] * y).sum(dim=1))
    assert score[0] == 0
    assert torch.all(d(x, torch.zeros(5, 6))[0] == 0)
    score.sum().backward()
    assert d.epilogue.out.weight.grad.abs().sum() > 0 and d.from_image.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["cpdgan", "proggan"])
def test_generator_output_depends_on_labels(name: str) -> None:
    g, _ = build_models(name, 16, 3, 1, **TINY)
    z = torch.randn(4, 16)
    a = g(z, torch.tensor([[1.0, 0, 0]]).expand(4, 3))
    b = g(z, torch.tensor([[0.0, 1, 1]]).expand(4, 3))
    assert (a - b).abs().max() > 1e-3


def test_every_cpdgan_pixel_norm_is_conditioned_on_the_labels() -> None:
    """Eq. 1: each conditional pixel norm takes gamma and beta from c = [z; y]. The test above cannot see a
    norm that drops y: the dense input layer carries y as well, and the norms start as plain pixel norms
    (gamma and beta weights zero). Here the input layer's label weights are zeroed and one norm at a time
    gets random weights; two label vectors of equal length (the input pixel norm scales by |[z; y]|)."""
    g, _ = build_models("cpdgan", 16, 3, 1, **TINY)
    z = torch.randn(4, 16)
    a, b = torch.tensor([[1.0, 0, 0]]).expand(4, 3), torch.tensor([[0.0, 1, 0]]).expand(4, 3)
    with torch.no_grad():
        g.dense.weight[:, TINY["latent_dim"]:] = 0
    torch.testing.assert_close(g(z, a), g(z, b), rtol=0, atol=0)  # y now reaches the image through the norms only
    norms = {name: m for name, m in g.named_modules() if isinstance(m, ConditionalPixelNorm)}
    assert len(norms) == 6  # two at 4 px, two in each block (8 and 16 px)
    for name, norm in norms.items():
        start = {key: value.clone() for key, value in norm.state_dict().items()}
        with torch.no_grad():
            for p in norm.parameters():
                p.normal_()
        assert (g(z, a) - g(z, b)).abs().max() > 1e-3, f"{name} ignores the label vector"
        norm.load_state_dict(start)


def test_prog_generator_fade_in() -> None:
    g, _ = build_models("proggan", 32, 2, 1, **TINY)
    z, y = inputs(5, 2)
    assert g.current_resolution == 8 and g.alpha == 1.0
    previous = g(z, y)
    assert previous.shape[-1] == 8
    g.set_growth(16, 0.0)
    torch.testing.assert_close(g(z, y), F.interpolate(previous, scale_factor=2, mode="nearest"))
    g.set_growth(16, 1.0)
    new = g(z, y)
    g.set_growth(16, 0.25)
    torch.testing.assert_close(g(z, y), 0.75 * F.interpolate(previous, scale_factor=2) + 0.25 * new)
    g.set_growth(16, 1.0)
    with torch.no_grad():  # fully grown: the old to-image layer no longer matters
        g.to_image["8"].weight.zero_()
    torch.testing.assert_close(g(z, y), new)


def test_prog_discriminator_fade_in() -> None:
    _, d = build_models("proggan", 32, 2, 1, **TINY)
    x = torch.randn(5, 1, 16, 16)
    score_8, logits_8 = d(F.avg_pool2d(x, 2))
    d.set_growth(16, 0.0)
    score_16, logits_16 = d(x)
    torch.testing.assert_close(score_16, score_8)
    torch.testing.assert_close(logits_16, logits_8)
    d.set_growth(16, 1.0)
    full = d(x)[0]
    with torch.no_grad():
        d.from_image["8"].weight.zero_()
    torch.testing.assert_close(d(x)[0], full)


@pytest.mark.parametrize("resolution,alpha", [(12, 1.0), (4, 1.0), (64, 1.0), (16, -0.1), (16, 1.5), (8, 0.5)])
def test_set_growth_refuses_invalid(resolution: int, alpha: float) -> None:
    for model in build_models("proggan", 32, 2, 1, **TINY):
        with pytest.raises(ValueError):
            model.set_growth(resolution, alpha)
        assert model.current_resolution == 8


@pytest.mark.parametrize("args,kwargs,message", [
    (("stylegan", 32, 2, 1), {}, "unknown GAN"),
    (("cpdgan", 24, 2, 1), {}, "resolution must be a power of two"),
    (("cpdgan", 4, 2, 1), {}, "resolution must be a power of two"),
    (("proggan", 32, 0, 1), {}, "label_dim"),
    (("cpdgan", 32, 2, 0), {}, "image_channels"),
    (("cpdgan", 32, 2, 1), {"start_resolution": 8}, "does not take"),
    (("proggan", 32, 2, 1), {"start_resolution": 64}, "start_resolution"),
    (("proggan", 32, 2, 1), {"channels_base": 16}, "channels_base"),
    (("proggan", 32, 2, 1), {"latent_dim": 0}, "latent_dim"),
])
def test_build_models_refuses(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_models(*args, **kwargs)


def test_channel_schedule_and_parameter_count() -> None:
    assert [channels_at(2 ** k, 16384, 512) for k in range(2, 9)] == [512, 512, 512, 512, 256, 128, 64]

    def conv(i: int, o: int, k: int = 3) -> int:
        return i * o * k * k + o

    # Tiny widths: 32 maps at 4 and 8, 16 at 16 (min(256 // r, 32)); latent 16 + 2 labels.
    g, _ = build_models("proggan", 16, 2, 1, **TINY)
    expected = (18 * 32 * 16 + 32 * 16) + conv(32, 32) + conv(32, 32) + conv(32, 32) + conv(32, 16) + conv(16, 16) \
        + conv(32, 1, 1) + conv(16, 1, 1)
    assert sum(p.numel() for p in g.parameters()) == expected
