"""The conditional diffusion model: multi-hot conditioning, guidance, seeding, and its CLI options."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from synthmed.errors import ConfigError
from synthmed.models.appearance import COMPONENTS, KMEANS_RESTARTS, MIN_CLUSTER_ROWS, AppearanceClusters, pool
from synthmed.models.diffusion import (
    KARRAS_RHO,
    KARRAS_SIGMA_MAX,
    ConditionalDiffusion,
    LabelEmbedding,
    karras_timesteps,
    noise_levels,
)
from synthmed.training.config import config_from_dict

TINY_NET = {"unet_channels": (8, 16), "attention": True, "sample_steps": 3}


def tiny_model(label_dim: int = 3, **kwargs) -> ConditionalDiffusion:
    torch.manual_seed(0)
    values = {**TINY_NET, **kwargs}
    model = ConditionalDiffusion(8, label_dim, 1, **values).eval()
    with torch.no_grad():  # a trained-looking label embedding (a fresh one starts near zero)
        model.labels.per_label.weight.normal_(0, 1)
        model.labels.null.normal_(0, 1)
    return model


def test_label_embedding_sums_one_vector_per_active_label_and_has_a_learned_null():
    torch.manual_seed(0)
    embedding = LabelEmbedding(4, 6)
    with torch.no_grad():
        embedding.null.normal_()
    labels = torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
    summed = embedding.per_label(labels)
    weights = embedding.per_label.weight.T  # (labels, dim): one row per label
    torch.testing.assert_close(summed[0], weights[0] + weights[2])
    torch.testing.assert_close(summed[1], torch.zeros(6))  # no label is a condition of its own, not the null
    torch.testing.assert_close(summed[2], weights.sum(0))
    drop = torch.tensor([False, True, False])
    out = embedding(labels, drop)
    torch.testing.assert_close(out[1], embedding.mlp(embedding.null))
    torch.testing.assert_close(out[[0, 2]], embedding.mlp(summed[[0, 2]]))


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("sampler", ["dpm-solver++", "ddim"])
def test_sampling_is_seeded_bounded_and_conditioned_on_several_labels(prediction, sampler):
    model = tiny_model(prediction=prediction, sampler=sampler)
    labels = torch.tensor([[1.0, 0, 0], [0, 1, 1], [1, 1, 1]])
    a = model.sample(labels, torch.Generator().manual_seed(5))
    assert a.shape == (3, 1, 8, 8) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, model.sample(labels, torch.Generator().manual_seed(5)))
    assert not torch.equal(a, model.sample(labels, torch.Generator().manual_seed(6)))
    other = torch.tensor([[0.0, 1, 0], [1, 0, 1], [0, 0, 0]])
    assert not torch.allclose(a, model.sample(other, torch.Generator().manual_seed(5)))


def test_guidance_scale_zero_ignores_labels_and_the_scale_changes_the_images():
    model = tiny_model()
    labels, other = torch.tensor([[1.0, 0, 1]]), torch.tensor([[0.0, 1, 0]])
    noise = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    # scale 0: uncond + 0 * (cond - uncond): only the null branch, whatever the labels
    torch.testing.assert_close(model.sample(labels, noise(), guidance_scale=0.0),
                               model.sample(other, noise(), guidance_scale=0.0))
    plain = model.sample(labels, noise(), guidance_scale=1.0)
    guided = model.sample(labels, noise(), guidance_scale=3.0)
    assert not torch.allclose(plain, guided)
    # scale 1 is the conditional branch alone: the same as guidance with a null that equals the labels
    model.labels.null.data = model.labels.per_label.weight @ labels[0]
    torch.testing.assert_close(model.sample(labels, noise(), guidance_scale=3.0), plain, atol=1e-5, rtol=0)


def test_a_guidance_interval_guides_only_the_steps_whose_noise_level_it_holds():
    model = tiny_model(sample_steps=4)
    labels = torch.tensor([[1.0, 0, 1], [0.0, 1, 0]])
    noise = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    guided = model.sample(labels, noise(), guidance_scale=3.0)
    plain = model.sample(labels, noise(), guidance_scale=1.0)
    scheduler = model._sampling_schedule()
    scheduler.set_timesteps(4)
    sigmas = [float(((1 - scheduler.alphas_cumprod[t]) / scheduler.alphas_cumprod[t]).sqrt())
              for t in scheduler.timesteps]
    assert sigmas == sorted(sigmas, reverse=True)
    # an interval holding every step's noise level is plain guidance; one holding none is no guidance
    torch.testing.assert_close(model.sample(labels, noise(), guidance_scale=3.0, guidance_interval=(0, 1e9)), guided)
    torch.testing.assert_close(model.sample(labels, noise(), guidance_scale=3.0,
                                            guidance_interval=(sigmas[0], 1e9)), plain)
    # (low, high]: leaving out the noisiest step only changes the images, and so does the model's own interval
    skip_first = model.sample(labels, noise(), guidance_scale=3.0, guidance_interval=(0, sigmas[1]))
    assert not torch.allclose(skip_first, guided) and not torch.allclose(skip_first, plain)
    model.guidance_interval = [0.0, sigmas[1]]
    torch.testing.assert_close(model.sample(labels, noise(), guidance_scale=3.0), skip_first)
    # the same as guiding by hand at every step but the first
    x = torch.randn((2, 1, 8, 8), generator=noise()) * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps):
        cond = model(x, t.expand(2), labels)
        out = cond if i == 0 else model(x, t.expand(2), labels, drop=torch.ones(2, dtype=torch.bool)) * -2 + 3 * cond
        x = scheduler.step(out, t, x).prev_sample
    torch.testing.assert_close(x.clamp(-1, 1), skip_first, atol=1e-5, rtol=1e-5)


def test_a_guidance_interval_in_the_config_reaches_the_sampler_and_older_configs_keep_their_keys():
    from synthmed.training.diffusion import build_diffusion

    config = config_from_dict({"model": "diffusion", "guidance_interval": [0, 5], **TINY_NET})
    assert config.to_dict()["guidance_interval"] == [0.0, 5.0]
    assert config_from_dict(config.to_dict()) == config
    assert build_diffusion(config, 8, 3, 1).guidance_interval == [0.0, 5.0]
    # unset, the key stays out of the config's dict: benchmark job keys hash it, so earlier jobs keep theirs
    assert "guidance_interval" not in config_from_dict({"model": "diffusion"}).to_dict()


def test_karras_spacing_starts_on_pure_noise_and_ends_at_the_smallest_noise_level():
    model = tiny_model()
    scheduler = model._sampling_schedule()
    sigmas = noise_levels(scheduler.alphas_cumprod)
    steps = karras_timesteps(sigmas, 16)
    assert len(steps) == 16 and steps[0] == 999 and steps[-1] == 0 and steps == sorted(set(steps), reverse=True)
    # after the first, each is the timestep whose sigma is nearest EDM's rho-7 ramp from sigma_max to sigma(t=0)
    ramp = [(KARRAS_SIGMA_MAX ** (1 / KARRAS_RHO) + i / 14 * (float(sigmas[0]) ** (1 / KARRAS_RHO)
                                                          - KARRAS_SIGMA_MAX ** (1 / KARRAS_RHO))) ** KARRAS_RHO
            for i in range(15)]
    for t, wanted in zip(steps[1:], ramp):
        assert abs(float(sigmas[t]) - wanted) <= min(abs(float(s) - wanted) for s in sigmas[max(t - 1, 0):t + 2])
    # the last noisy step: sigma 0.018, against trailing spacing's 0.11 in 16 steps
    scheduler.set_timesteps(16)
    assert float(sigmas[steps[-2]]) < 0.2 * float(sigmas[int(scheduler.timesteps[-1])])
    # many steps: the ramp's low end lands on few timesteps; moved apart, the count is kept
    many = karras_timesteps(sigmas, 1000)
    assert many == list(range(999, -1, -1))
    assert karras_timesteps(sigmas, 1) == [999]


def test_karras_spacing_reaches_the_solver_and_is_refused_where_it_cannot_apply():
    from synthmed.training.diffusion import build_diffusion

    model = tiny_model(sample_steps=6)
    labels, noise = torch.tensor([[1.0, 0, 1], [0.0, 1, 0]]), lambda: torch.Generator().manual_seed(4)  # noqa: E731
    karras = model.sample(labels, noise(), sample_spacing="karras")
    assert torch.equal(karras, model.sample(labels, noise(), sample_spacing="karras"))
    assert not torch.allclose(karras, model.sample(labels, noise()))
    # the same as stepping DPM-Solver++ through karras_timesteps by hand
    scheduler = model._sampling_schedule()
    sigmas = noise_levels(scheduler.alphas_cumprod)
    scheduler.set_timesteps(timesteps=karras_timesteps(sigmas, 6))
    x = torch.randn((2, 1, 8, 8), generator=noise()) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        cond = model(x, t.expand(2), labels)
        uncond = model(x, t.expand(2), labels, drop=torch.ones(2, dtype=torch.bool))
        x = scheduler.step(uncond + model.guidance_scale * (cond - uncond), t, x).prev_sample
    torch.testing.assert_close(x.clamp(-1, 1), karras, atol=1e-4, rtol=1e-4)
    # the config key reaches the model, and stays out of the config's dict at its default (benchmark job keys)
    config = config_from_dict({"model": "diffusion", "sample_spacing": "karras", **TINY_NET})
    assert build_diffusion(config, 8, 3, 1).sample_spacing == "karras"
    assert "sample_spacing" not in config_from_dict({"model": "diffusion"}).to_dict()
    for values, message in (({"sample_spacing": "even"}, "sample_spacing = 'even' must be one of"),
                            ({"sample_spacing": "karras", "sampler": "ddim"}, "karras needs sampler dpm-solver++"),
                            ({"sample_spacing": "karras", "train_timesteps": 10, "sample_steps": 11},
                             r"karras takes at most train_timesteps \(10\) steps"),
                            ({"model": "cpdgan", "sample_spacing": "karras"}, "applies to the diffusion model only")):
        with pytest.raises(ConfigError, match=message):
            config_from_dict({"model": "diffusion", **values})
    with pytest.raises(ValueError, match="karras needs sampler dpm-solver"):
        tiny_model(sampler="ddim").sample(labels, noise(), sample_spacing="karras")


@pytest.mark.parametrize("sampler,spacing", [("dpm-solver++", "karras"), ("ddim", "trailing")])
def test_starting_from_noised_images_runs_only_the_remaining_steps(sampler, spacing):
    model = tiny_model(sample_steps=6, sampler=sampler, sample_spacing=spacing)
    labels, noise = torch.tensor([[1.0, 0, 1], [0.0, 1, 0]]), lambda: torch.Generator().manual_seed(7)  # noqa: E731
    images = torch.rand((2, 1, 8, 8), generator=torch.Generator().manual_seed(8)) * 2 - 1
    # from the first step (pure noise: the images weigh 1/20,000 at sigma 20,291) it is the plain sampler
    torch.testing.assert_close(model.sample(labels, noise(), start_from=(images, 0)), model.sample(labels, noise()),
                               atol=1e-3, rtol=0)
    # from step k: the images noised to step k's level by the sampler's own schedule, then steps k, k+1, ... alone
    scheduler = model._sampling_schedule()
    if spacing == "karras":
        sigmas = noise_levels(scheduler.alphas_cumprod)
        scheduler.set_timesteps(timesteps=karras_timesteps(sigmas, 6))
        scheduler.set_begin_index(3)  # (distinct timesteps: without it the scheduler finds step 3 anyway)
    else:
        scheduler.set_timesteps(6)
    x = scheduler.add_noise(images, torch.randn((2, 1, 8, 8), generator=noise()), scheduler.timesteps[3:4])
    for t in scheduler.timesteps[3:]:
        cond = model(x, t.expand(2), labels)
        uncond = model(x, t.expand(2), labels, drop=torch.ones(2, dtype=torch.bool))
        x = scheduler.step(uncond + model.guidance_scale * (cond - uncond), t, x).prev_sample
    from_step_3 = model.sample(labels, noise(), start_from=(images, 3))
    torch.testing.assert_close(from_step_3, x.clamp(-1, 1), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(from_step_3, model.sample(labels, noise(), start_from=(-images, 3)))
    with pytest.raises(ValueError, match="start_from: step 6 of 6: must be 0 to 5"):
        model.sample(labels, noise(), start_from=(images, 6))
    if spacing == "karras":  # the last step starts at sigma 0.006: the images come back nearly as they went in
        assert (model.sample(labels, noise(), start_from=(images, 5)) - images).abs().max() < 0.05


def test_bfloat16_sampling_rounds_only_the_network_and_auto_follows_the_device(monkeypatch):
    from synthmed import device
    from synthmed.training.diffusion import build_diffusion

    model = tiny_model(sample_steps=4)
    labels, noise = torch.tensor([[1.0, 0, 1], [0.0, 1, 0]]), lambda: torch.Generator().manual_seed(3)  # noqa: E731
    plain = model.sample(labels, noise())
    rounded = model.sample(labels, noise(), sample_bf16=True)
    assert rounded.dtype == torch.float32 and torch.equal(rounded, model.sample(labels, noise(), sample_bf16=True))
    assert 0 < (rounded - plain).abs().mean() < 0.05  # bfloat16 keeps 8 bits of mantissa: close, not equal
    # the network under autocast, the guidance and the solver in float32: the same as doing it by hand
    scheduler = model._sampling_schedule()
    scheduler.set_timesteps(4)
    x = torch.randn((2, 1, 8, 8), generator=noise()) * scheduler.init_noise_sigma
    both, drop = torch.cat([labels, labels]), torch.tensor([False, False, True, True])
    for t in scheduler.timesteps:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            cond, uncond = model(torch.cat([x, x]), t.expand(4), both, drop).float().chunk(2)
        x = scheduler.step(uncond + model.guidance_scale * (cond - uncond), t, x).prev_sample
    torch.testing.assert_close(x.clamp(-1, 1), rounded, atol=1e-6, rtol=0)
    for fast, expected in ((True, rounded), (False, plain)):
        monkeypatch.setattr(device, "bf16_is_fast", lambda _device, fast=fast: fast)
        assert torch.equal(model.sample(labels, noise(), sample_bf16="auto"), expected)
    # the config key reaches the model; unset, it stays out of the config's dict (benchmark job keys)
    config = config_from_dict({"model": "diffusion", "sample_bf16": "auto", **TINY_NET})
    assert build_diffusion(config, 8, 3, 1).sample_bf16 == "auto" and config.to_dict()["sample_bf16"] == "auto"
    assert "sample_bf16" not in config_from_dict({"model": "diffusion"}).to_dict()


def test_guidance_combines_the_two_branches_linearly():
    """One denoiser call on the doubled batch gives uncond + w * (cond - uncond)."""
    model = tiny_model()
    x, t, labels = torch.randn(2, 1, 8, 8), torch.tensor([500, 500]), torch.tensor([[1.0, 0, 0], [0, 1, 1]])
    cond = model(x, t, labels)
    uncond = model(x, t, labels, drop=torch.tensor([True, True]))
    both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, labels]),
                 torch.tensor([False, False, True, True])).chunk(2)
    torch.testing.assert_close(both[0], cond, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both[1], uncond, atol=1e-5, rtol=1e-5)


def looks_and_labels() -> tuple[torch.Tensor, torch.Tensor]:
    """120 8 px images of three looks (dark, bright, bright left half), 40 each, and two labels: looks 0 and 1
    under labels [1, 0] half and half, look 2 under [0, 1] only."""
    generator = torch.Generator().manual_seed(0)
    images = torch.full((120, 1, 8, 8), -0.8)
    images[40:80] = 0.8
    images[80:, :, :, :4] = 0.8
    images = (images + 0.05 * torch.randn(images.shape, generator=generator)).clamp(-1, 1)
    labels = torch.tensor([[1.0, 0]] * 80 + [[0.0, 1]] * 40)
    return images, labels


def fitted_clusters(count: int = 3) -> AppearanceClusters:
    clusters = AppearanceClusters(count, label_dim=2)
    images, labels = looks_and_labels()
    clusters.fit(pool(images), labels, seed=0)
    return clusters


def test_appearance_clusters_are_sklearns_kmeans_on_the_principal_components():
    images, labels = looks_and_labels()
    clusters = fitted_clusters()
    features = pool(images).double().numpy()
    pca = PCA(min(COMPONENTS, *features.shape), svd_solver="full").fit(features)
    kmeans = KMeans(3, n_init=KMEANS_RESTARTS, random_state=0).fit(pca.transform(features))
    assert torch.equal(clusters.assign(images), torch.from_numpy(kmeans.labels_))
    assert sorted(np.bincount(kmeans.labels_).tolist()) == [40, 40, 40]  # the three looks, found
    # the shares are the training fold's own, per label combination, and over all rows
    look_of = {label: int(clusters.assign(images[[40 * label]])) for label in range(3)}
    shares = dict(zip(map(tuple, clusters.fitted["combinations"].tolist()), clusters.fitted["shares"]))
    expected = torch.zeros(3, dtype=torch.float64)
    expected[[look_of[0], look_of[1]]] = 0.5
    torch.testing.assert_close(shares[(1, 0)], expected)
    torch.testing.assert_close(shares[(0, 1)], torch.eye(3, dtype=torch.float64)[look_of[2]])
    torch.testing.assert_close(clusters.fitted["overall"], torch.full((3,), 1 / 3, dtype=torch.float64))


def test_appearance_clusters_are_drawn_from_the_shares_of_each_rows_labels():
    clusters = fitted_clusters()
    images, _ = looks_and_labels()
    look_of = [int(clusters.assign(images[[40 * label]])) for label in range(3)]
    rows = torch.tensor([[1.0, 0]] * 3000 + [[0.0, 1]] * 10 + [[1.0, 1]] * 3000)  # [1, 1] never seen in training
    drawn = clusters.draw(rows, torch.Generator().manual_seed(4))
    assert torch.equal(drawn, clusters.draw(rows, torch.Generator().manual_seed(4)))  # seeded
    assert set(drawn[:3000].tolist()) == {look_of[0], look_of[1]}
    assert abs((drawn[:3000] == look_of[0]).float().mean().item() - 0.5) < 0.03
    assert drawn[3000:3010].tolist() == [look_of[2]] * 10
    assert np.bincount(drawn[3010:].numpy(), minlength=3).min() > 900  # all rows' shares: a third each


@pytest.mark.parametrize("rows", [5, 60, 120])
def test_a_small_fold_gets_at_most_one_cluster_per_least_rows(rows):
    """k-means looks for at most rows // MIN_CLUSTER_ROWS clusters (at least one): a fold too small for the
    config's count trains with fewer, not with clusters of a few images or an error."""
    images, labels = looks_and_labels()
    clusters = AppearanceClusters(4000, label_dim=2)
    order = torch.randperm(120, generator=torch.Generator().manual_seed(0))[:rows]
    clusters.fit(pool(images[order]), labels[order], seed=0)
    assert 1 <= clusters.fitted_count <= max(1, rows // MIN_CLUSTER_ROWS)
    assert torch.bincount(clusters.assign(images[order])).min() >= min(rows, MIN_CLUSTER_ROWS)


def test_a_model_with_appearance_clusters_keeps_them_in_its_state_dict_and_needs_them():
    model = tiny_model(label_dim=2, appearance_clusters=3)
    images, labels = looks_and_labels()
    model.clusters.fit(pool(images), labels, seed=0)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([500, 500])
    with pytest.raises(ValueError, match="pass each row's cluster"):
        model(x, t, labels[:2])
    # the null condition drops the cluster with the labels
    dropped = [model(x, t, labels[:2], torch.tensor([True, True]), torch.tensor([c, c])) for c in (0, 2)]
    torch.testing.assert_close(dropped[0], dropped[1])
    assert not torch.allclose(model(x, t, labels[:2], None, torch.tensor([0, 0])),
                              model(x, t, labels[:2], None, torch.tensor([2, 2])))
    rebuilt = tiny_model(label_dim=2, appearance_clusters=3)
    with pytest.raises(RuntimeError, match="not fitted"):
        rebuilt.sample(labels[:4], torch.Generator().manual_seed(1))
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(rebuilt.sample(labels[:4], torch.Generator().manual_seed(1)),
                       model.sample(labels[:4], torch.Generator().manual_seed(1)))
    state = model.clusters.get_extra_state()
    for damaged, words in [({**state, "shares": state["shares"][:, :2]}, "does not fit 3 clusters"),
                           ({**state, "mean": state["mean"].tolist()}, "values that are not tensors"),
                           ({}, "holds [], not a fit of"),
                           ({**state, "shares": state["shares"].long()}, "not finite floating-point numbers"),
                           ({**state, "centres": state["centres"][:0]}, "holds 0 cluster centres, the config 3"),
                           ({**state, "combinations": state["combinations"][:, :1]},
                            "holds label combinations 1 wide, for a model of 2 labels")]:
        with pytest.raises(RuntimeError, match=re.escape(words)):
            rebuilt.clusters.set_extra_state(damaged)


def test_clusters_of_fewer_than_the_least_rows_are_dissolved_and_each_centre_is_a_mean_of_many():
    """k-means gives a few outliers a cluster of their own, whose centre would be nearly one real image: such a
    cluster is dissolved into its neighbours, and every centre kept is the mean of at least MIN_CLUSTER_ROWS."""
    images, labels = looks_and_labels()
    outliers = torch.ones(3, 1, 8, 8)  # three white images, far from every look
    images, labels = torch.cat([images, outliers]), torch.cat([labels, torch.tensor([[0.0, 1]] * 3)])
    plain = KMeans(4, n_init=KMEANS_RESTARTS, random_state=0).fit(pool(images).double().numpy())
    assert sorted(np.bincount(plain.labels_).tolist()) == [3, 40, 40, 40]  # k-means alone keeps the three apart
    clusters = AppearanceClusters(4, label_dim=2)
    clusters.fit(pool(images), labels, seed=0)
    assert clusters.fitted_count == 3
    assigned = clusters.assign(images)
    assert sorted(torch.bincount(assigned).tolist()) == [40, 40, 43]
    projected = (pool(images) - clusters.fitted["mean"]) @ clusters.fitted["components"].T
    for cluster in range(3):
        assert (assigned == cluster).sum() >= MIN_CLUSTER_ROWS
        torch.testing.assert_close(clusters.fitted["centres"][cluster], projected[assigned == cluster].mean(0),
                                   atol=1e-4, rtol=1e-4)
    assert clusters.fitted["shares"].shape == (2, 4) and clusters.fitted["overall"][3] == 0  # never drawn


@pytest.mark.parametrize("values, message", [
    ({"model": "diffusion", "appearance_clusters": 1}, r"appearance_clusters = 1 must be 0 \(off\) or an integer"),
    ({"model": "diffusion", "appearance_clusters": True}, "appearance_clusters = True must be"),
    ({"model": "diffusion", "appearance_clusters": 4097}, r"appearance_clusters = 4097 must be .* \[2, 4096\]"),
    ({"model": "diffusion", "prediction": "x0"}, "prediction = 'x0' is not one of"),
    ({"model": "diffusion", "sampler": "euler"}, "sampler = 'euler' is not one of"),
    ({"model": "diffusion", "unet_channels": [32, 60]}, "unet_channels .* multiples of 8"),
    ({"model": "diffusion", "sample_steps": 0}, r"sample_steps = 0 must be an integer in \[1, 1000\]"),
    ({"model": "diffusion", "label_dropout": 1.0}, r"label_dropout = 1.0 must be in \[0, 1\)"),
    ({"model": "diffusion", "augment": "color"}, "augment = 'color' applies to the GANs only"),
    ({"model": "diffusion", "guidance_interval": [3.0, 0.3]}, r"guidance_interval = \(3.0, 0.3\) must be two noise"),
    ({"model": "diffusion", "guidance_interval": [0.3]},
     r"guidance_interval = \[0.3\] must be a list of 2 finite numbers or null"),
    ({"model": "diffusion", "guidance_interval": "all"}, r"guidance_interval = 'all' must be"),
    ({"model": "diffusion", "sample_bf16": "yes"}, "sample_bf16 = 'yes' must be true or false or 'auto'"),
    ({"model": "cpdgan", "augment": "color,flip"}, "augment = 'color,flip' unknown augmentation 'flip'"),
    ({"model": "cpdgan", "ada_target": 0.6, "gan_loss": "non-saturating"}, "ada_target = 0.6 needs augment"),
    ({"model": "cpdgan", "ada_target": 0.6, "augment": "translation"},
     "ada_target = 0.6 needs gan_loss: non-saturating"),
    ({"model": "cpdgan", "ada_target": 1.5, "augment": "translation", "gan_loss": "non-saturating"},
     r"ada_target = 1.5 must be a number in \[0, 1\)"),
    ({"model": "cpdgan", "ada_images": 5000}, "ada_images = 5000 applies with ada_target > 0 only"),
    ({"model": "proggan", "ada_target": 0.6, "ada_images": 0, "augment": "translation", "gan_loss": "non-saturating"},
     "ada_images = 0 must be a positive integer"),
    ({"model": "diffusion", "ada_target": 0.6}, "ada_target = 0.6 applies to the GANs only"),
])
def test_bad_diffusion_and_augmentation_keys_are_refused_by_name(values, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(values)
