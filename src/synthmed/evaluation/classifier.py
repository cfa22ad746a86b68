"""The downstream classifier of paper S.4: a DenseNet-121 with one sigmoid output per label.

As in the paper: Adam at lr 1e-4, batch 48, an epoch of at most 5000 training images
drawn at random, random horizontal flips as the only augmentation, lr x0.1 after 2
epochs without a gain in validation mean AUROC, stop after 3, and the weights of the
best validation epoch kept. A validation label without positives or negatives is
left out of that mean (never scored 0).

Loss: binary cross-entropy on the logits, class-weighted per label with
``pos_weight_j = n_neg_j / max(n_pos_j, 1)`` counted on the training labels (PyTorch's
``BCEWithLogitsLoss(pos_weight=...)``), so each label's positives weigh as much in
total as its negatives; without positives the weight multiplies nothing.

Input: uint8 ``(N, C, R, R)`` -> float in [0, 1]. With ``input_size`` set (the paper:
224) images are resized bilinearly, grey is repeated to 3 channels and ImageNet
normalisation applied; with ``input_size=None`` the network sees the native
resolution and channels (cheaper; needs R >= 32). ImageNet DenseNet-121 weights are
not available offline: training starts from scratch unless ``pretrained_weights``
names a local state dict.

``bf16`` (true, false or auto: where it is fast, ``device.bf16_is_fast``) autocasts the training
forward passes in bfloat16: on a CPU with AVX-512 BF16 a training step at 32 px took 1.3x less
time, and the demo's real classifier scored the same test AUROC (0.983). Predictions and features
are always computed in float32, so every evaluation reads the trained weights the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import DenseNet121
from torch import nn

from synthmed._io import sha256_file, write_with_atomic
from synthmed.config import check_values, field_types, seed_problem
from synthmed.data.imaging import MAX_RESOLUTION
from synthmed.device import precision_name, resolve_bf16, resolve_device
from synthmed.errors import ConfigError, DataError, UserError
from synthmed.metrics.auroc import auroc_per_label, undefined_labels
from synthmed.progress import progress_bar
from synthmed.training.config import MAX_BATCH_SIZE, MAX_THREADS
from synthmed.training.run_dir import UNREADABLE_TORCH_FILE, unreadable_torch_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_SIZE = 32  # DenseNet-121 halves the input five times; below 32 px the last pooling has nothing left
MAX_LR = 10.0  # Adam's step is about lr per weight: far above any useful rate (the paper's 1e-4), and finite after
FEATURE_DIM = 1024
# torchvision names a dense layer's parts "norm1" (or "norm.1" in the original file); MONAI "layers.norm1"
_TORCHVISION_KEY = re.compile(r"^(.*denselayer\d+)\.(norm|relu|conv)\.?([12])\.(weight|bias|running_mean|running_var)$")


@dataclasses.dataclass
class ClassifierConfig:
    input_size: int | None = None  # None: native resolution and channels; else resized, 3 channels, ImageNet norm
    pretrained_weights: str | None = None  # local DenseNet-121 state dict (MONAI or torchvision names)
    lr: float = 1e-4
    batch_size: int = 48
    max_images_per_epoch: int = 5000
    lr_factor: float = 0.1
    lr_patience: int = 2  # epochs without a validation mean-AUROC gain before each lr reduction
    stop_patience: int = 3  # epochs without a gain before stopping
    max_epochs: int = 50  # a hard cap on top of early stopping
    seed: int = 0
    bf16: bool | Literal["auto"] = False  # training forward passes in bfloat16 (auto: where fast); evaluation float32
    device: str = "auto"  # auto = cuda when available
    threads: int = 0  # torch CPU threads; 0 = torch's default

    def __post_init__(self) -> None:
        if isinstance(self.pretrained_weights, os.PathLike):
            self.pretrained_weights = str(self.pretrained_weights)  # a path, kept JSON-friendly
        _check_config(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ClassifierConfig:
        """A config from user-given keys (``--set``, a preset's ``classifier``); unknown keys are refused by name."""
        check_values(values, field_types(cls), "classifier")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """Everything that chooses the trained model. The hardware keys (device, threads) are left out on purpose:
        they change only how sums are rounded, which does move the weights (seed 0 of the paper's recipe on br35h
        32 px: another network at two CPU threads than at one; docs/compute.md), but a classifier trained on other
        hardware is as valid, so it is reused, not trained again."""
        return {k: v for k, v in self.to_dict().items() if k not in ("device", "threads")}


def _check_config(c: ClassifierConfig) -> None:
    """Every field, so that a bad value stops before any training with the key named."""
    def fail(key: str, message: str) -> None:
        raise ConfigError(f"classifier {key} = {getattr(c, key)!r} {message}")

    check_values(dataclasses.asdict(c), field_types(ClassifierConfig), "classifier")  # types before comparisons
    # up to the largest image a store holds (a mistyped huge size overflowed in torch's resizing)
    if c.input_size is not None and not MIN_SIZE <= c.input_size <= MAX_RESOLUTION:
        fail("input_size", f"must be null (native size) or an integer in [{MIN_SIZE}, {MAX_RESOLUTION}]")
    if c.pretrained_weights is not None and not c.pretrained_weights.strip():  # would train from scratch unsaid
        fail("pretrained_weights", "must name a weights file (leave it out, or null, to train from scratch)")
    for key in ("batch_size", "max_images_per_epoch", "lr_patience", "stop_patience", "max_epochs"):
        if getattr(c, key) < 1:
            fail(key, "must be an integer of at least 1")
    if c.batch_size > MAX_BATCH_SIZE:  # the training config's bound: torch overflows far above it
        fail("batch_size", f"must be an integer of at most {MAX_BATCH_SIZE}")
    if not 0 <= c.threads <= MAX_THREADS:
        fail("threads", f"must be an integer in [0, {MAX_THREADS}] (0: torch's default)")
    if problem := seed_problem(c.seed):
        fail("seed", problem)
    if not 0 < c.lr <= MAX_LR:
        fail("lr", f"must be a number in (0, {MAX_LR:g}]")
    if not 0 < c.lr_factor <= 1:
        fail("lr_factor", "must be a number in (0, 1]")
    try:
        resolve_device(c.device)
    except (RuntimeError, TypeError):
        fail("device", "is not a torch device (auto, cpu, cuda, cuda:1, ...)")


class Classifier:
    """A DenseNet-121 and its input pipeline; ``predict`` and ``features`` take uint8 (N, C, R, R)."""

    feature_dim = FEATURE_DIM

    def __init__(self, config: ClassifierConfig, image_channels: int, label_names: Sequence[str]):
        if config.input_size is not None and image_channels not in (1, 3):
            raise ValueError(f"input_size needs 1- or 3-channel images, got {image_channels} channels")
        self.config, self.image_channels, self.label_names = config, image_channels, list(label_names)
        self.device = resolve_device(config.device)
        with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the caller's global RNG
            torch.manual_seed(config.seed)
            self.net = DenseNet121(spatial_dims=2, in_channels=3 if config.input_size else image_channels,
                                   out_channels=len(self.label_names))
        # channels-last: oneDNN's faster layout for DenseNet-121 on the CPU (a 48-image training step at
        # 32 px: 0.26 s instead of 0.37 s on 2 cores, torch 2.13) and cuDNN's under bf16 on GPUs
        self.net.to(self.device, memory_format=torch.channels_last)
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        self._mean, self._std = mean.view(1, 3, 1, 1).to(self.device), std.view(1, 3, 1, 1).to(self.device)

    def check_images(self, images: np.ndarray) -> None:
        if images.ndim != 4 or images.dtype != np.uint8 or images.shape[1] != self.image_channels:
            raise ValueError(f"expected uint8 images (N, {self.image_channels}, R, R), got {images.dtype} "
                             f"{images.shape}")
        if self.config.input_size is None and min(images.shape[2:]) < MIN_SIZE:
            raise ConfigError(f"classifier input_size = None: images of {images.shape[2]} px are below "
                              f"DenseNet-121's minimum of {MIN_SIZE}; set input_size (e.g. {MIN_SIZE} or 224) "
                              "to resize them")

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 batch -> the network's float input on the device."""
        x = images.to(self.device).float() / 255
        size = self.config.input_size
        if size is not None:
            if x.shape[-2:] != (size, size):
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            x = (x.expand(-1, 3, -1, -1) - self._mean) / self._std
        return x.contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def _run(self, images: np.ndarray, head: Callable[[torch.Tensor], torch.Tensor], dim: int) -> np.ndarray:
        self.check_images(images)
        self.net.eval()
        out = [head(self.inputs(torch.from_numpy(np.ascontiguousarray(images[start:start + self.config.batch_size]))))
               .float().cpu() for start in range(0, len(images), self.config.batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, dim), np.float32)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (N, L)."""
        return self._run(images, lambda x: torch.sigmoid(self.net(x)), len(self.label_names))

    def features(self, images: np.ndarray) -> np.ndarray:
        """The pooled 1024-d features before the classification layer (N, 1024)."""
        pooled = self.net.class_layers[:-1]  # relu, global average pool, flatten; not "out"
        return self._run(images, lambda x: pooled(self.net.features(x)), FEATURE_DIM)

    def digest(self) -> str:
        """sha256 of the weights and buffers (name, dtype, shape and values): equal exactly when the network
        computes the same."""
        hashed = hashlib.sha256()
        for name, tensor in self.net.state_dict().items():
            hashed.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
            hashed.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return hashed.hexdigest()

    def save(self, path: str | os.PathLike, history: dict | None = None, meta: dict | None = None) -> None:
        checkpoint = {
            "config": self.config.to_dict(), "image_channels": self.image_channels, "label_names": self.label_names,
            "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "history": history, "meta": meta or {},
        }
        write_with_atomic(path, lambda tmp: torch.save(checkpoint, tmp), suffix=".pt")


def load_classifier(path: str | os.PathLike, device: str | None = None) -> tuple[Classifier, dict[str, Any]]:
    """A saved classifier (on ``device``, default the saved config's) and its checkpoint (history, meta);
    a missing, truncated or foreign file (a generator's, say) is a DataError naming it."""
    if not Path(path).is_file():
        raise DataError("no such classifier file", file=path)
    not_ours = "is not a synthmed classifier file (real_classifier.pt of `synthmed evaluate real-classifier`)"
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        config = ClassifierConfig(**checkpoint["config"])
        channels, names, state = checkpoint["image_channels"], checkpoint["label_names"], checkpoint["state_dict"]
        if not (type(channels) is int and channels >= 1 and isinstance(names, list)
                and all(isinstance(name, str) for name in names)):
            raise TypeError(f"image_channels {channels!r} and label_names {names!r} are not a count and names")
    except UserError as error:  # a saved config this version refuses: named as such, not as a foreign file
        raise DataError(f"holds a classifier config this version refuses ({error})", file=path) from None
    except (*UNREADABLE_TORCH_FILE, TypeError) as error:  # TypeError: a checkpoint whose config is not a classifier's
        raise unreadable_torch_file(error, Path(path), not_ours) from None
    # outside the try: a device this machine lacks says so itself, not "not a classifier file"
    model = Classifier(config if device is None else dataclasses.replace(config, device=device), channels, names)
    try:
        model.net.load_state_dict(state)
    except RuntimeError as error:  # tensors of other names or shapes
        raise unreadable_torch_file(error, Path(path), not_ours) from None
    model.net.eval()
    return model, checkpoint


def check_fits(classifier: Classifier, path: str | os.PathLike, label_names: Sequence[str], image_channels: int,
               resolution: int) -> None:
    """A loaded classifier against the images it is to read (their labels, channels and size): a misfit is a
    DataError naming its file, raised before any image is read rather than deep inside the features."""
    if classifier.label_names != list(label_names):
        raise DataError(f"the classifier reads labels {classifier.label_names}, the setting has {list(label_names)}",
                        file=path)
    if classifier.image_channels != image_channels:
        raise DataError(f"the classifier takes {classifier.image_channels}-channel images, the setting has "
                        f"{image_channels}-channel ones", file=path)
    try:
        classifier.check_images(np.zeros((1, image_channels, resolution, resolution), np.uint8))
    except ConfigError as error:
        raise DataError(str(error), file=path) from None


def load_pretrained(net: nn.Module, path: str | os.PathLike) -> None:
    """DenseNet-121 feature weights from a local state dict; the classification layer stays random (paper S.4)."""
    if not Path(path).is_file():
        raise ConfigError(f"classifier pretrained_weights = {str(path)!r}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except UNREADABLE_TORCH_FILE as error:
        raise unreadable_torch_file(error, Path(path), "classifier pretrained_weights: is not a weights file "
                                                       "(a DenseNet-121 state dict saved by torch.save)") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise DataError("classifier pretrained_weights: is not a weights file (it holds no state dict of names to "
                        "tensors)", file=path)
    state = {_TORCHVISION_KEY.sub(r"\1.layers.\2\3.\4", k): v for k, v in state.items()}
    own = net.state_dict()
    wanted = [k for k in own if k.startswith("features.") and not k.endswith("num_batches_tracked")]
    missing = [k for k in wanted if k not in state]
    wrong = [k for k in wanted if k in state and state[k].shape != own[k].shape]
    if missing or wrong:
        raise ConfigError(f"classifier pretrained_weights = {str(path)!r} does not fit DenseNet-121 with "
                          f"{own['features.conv0.weight'].shape[1]} input channels: {len(missing)} feature tensors "
                          f"missing (e.g. {missing[:2]}), {len(wrong)} of another shape (e.g. {wrong[:2]})")
    net.load_state_dict({k: state[k] for k in wanted}, strict=False)


def class_pos_weight(labels: np.ndarray) -> torch.Tensor:
    """Per-label ``n_neg / max(n_pos, 1)`` from the training labels."""
    positives = labels.astype(np.float64).sum(axis=0)
    return torch.tensor((len(labels) - positives) / np.maximum(positives, 1), dtype=torch.float32)


def plateau_step(mean_aurocs: Sequence[float], lr_patience: int, stop_patience: int) -> tuple[bool, bool]:
    """After the latest epoch: (reduce the lr now, stop now).

    Counts epochs since the best mean AUROC (a tie is no gain). As Keras' ReduceLROnPlateau
    and EarlyStopping: the lr drops after every ``lr_patience`` epochs without a gain,
    training stops once ``stop_patience`` epochs passed without one.
    """
    since = len(mean_aurocs) - 1 - int(np.argmax(mean_aurocs))  # argmax: the first maximum
    return since > 0 and since % lr_patience == 0, since >= stop_patience


def _batches(order: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Chunks of ``size``; a last chunk of one joins the previous (BatchNorm cannot train on one value)."""
    chunks = list(torch.split(order, size))
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks[-2:] = [torch.cat(chunks[-2:])]
    return chunks


def _train_epoch(model: Classifier, optimizer: torch.optim.Optimizer, loss_fn: nn.Module, images: np.ndarray,
                 targets: torch.Tensor, count: int, generator: torch.Generator, bf16: bool, bar_title: str,
                 progress: bool) -> float:
    model.net.train()
    order = torch.randperm(len(images), generator=generator)[:count]
    total = 0.0
    with progress_bar(count, bar_title, progress) as bar:
        for batch in _batches(order, model.config.batch_size):
            x = torch.from_numpy(images[batch.numpy()])
            flip = torch.rand(len(batch), generator=generator) < 0.5
            x = model.inputs(torch.where(flip[:, None, None, None], x.flip(-1), x))  # float32
            with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model.net(x)
            loss = loss_fn(logits.float(), targets[batch].to(model.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
            bar.advance(len(batch))
    return total / count


def train_classifier(
    train_images: np.ndarray, train_labels: np.ndarray, val_images: np.ndarray, val_labels: np.ndarray,
    config: ClassifierConfig, out_dir: str | os.PathLike | None = None, log: Callable[[str], None] = print,
    progress: bool = True, label_names: Sequence[str] | None = None,
) -> tuple[Classifier, dict[str, Any]]:
    """Train on the train fold, keep the best epoch by validation mean AUROC; save to ``out_dir/classifier.pt``.

    History: ``epochs`` (per epoch: loss, lr, val AUROC per label and mean), ``best_epoch``,
    ``stop_reason``, ``pos_weight``, ``initialisation`` and the undefined validation labels.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    names = list(label_names) if label_names is not None else [f"label_{j}" for j in range(train_labels.shape[1])]
    undefined = undefined_labels(val_labels, names)
    if len(undefined) == len(names):
        raise DataError(f"no label has both positives and negatives in the validation fold: {undefined}")
    for name, reason in undefined.items():
        log(f"validation AUROC of {name!r} is undefined ({reason}); it is left out of the validation mean")
    model = Classifier(config, train_images.shape[1], names)
    model.check_images(train_images)
    model.check_images(val_images)
    if config.pretrained_weights:
        load_pretrained(model.net, config.pretrained_weights)
        initialisation: dict[str, Any] = {"weights": config.pretrained_weights,
                                          "sha256": sha256_file(config.pretrained_weights)}
        log(f"DenseNet-121 features from {config.pretrained_weights}; classification layer random")
    else:
        initialisation = {"weights": None}
        log("DenseNet-121 trained from scratch (no pretrained_weights given)")

    bf16 = resolve_bf16(config.bf16, model.device)
    if config.bf16 == "auto":
        log(f"bf16 auto: training in {precision_name(bf16)} on {model.device}")
    pos_weight = class_pos_weight(train_labels)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight.to(model.device))
    optimizer = torch.optim.Adam(model.net.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)  # epoch sampling and flips
    per_epoch = min(config.max_images_per_epoch, len(train_images))
    targets = torch.from_numpy(train_labels.astype(np.float32))
    epochs: list[dict[str, Any]] = []
    means: list[float] = []
    best_state: dict[str, torch.Tensor] = {}
    stop_reason = f"max_epochs ({config.max_epochs}) reached"
    for epoch in range(1, config.max_epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        loss = _train_epoch(model, optimizer, loss_fn, train_images, targets, per_epoch, generator, bf16,
                            f"classifier epoch {epoch}", progress)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the undefined validation labels were named once above
            val = auroc_per_label(val_labels, model.predict(val_images), names)
        epochs.append({"epoch": epoch, "loss": loss, "lr": lr, "val_auroc": val["per_label"],
                       "val_mean_auroc": val["mean"]})
        means.append(val["mean"])
        if epoch - 1 == int(np.argmax(means)):
            best_state = {k: v.detach().cpu().clone() for k, v in model.net.state_dict().items()}
        log(f"epoch {epoch}: loss {loss:.4f}, val mean AUROC {val['mean']:.4f}, lr {lr:.1e}")
        reduce, stop = plateau_step(means, config.lr_patience, config.stop_patience)
        if stop:
            stop_reason = f"no validation mean-AUROC gain for {config.stop_patience} epochs"
            break
        if reduce:
            for group in optimizer.param_groups:
                group["lr"] *= config.lr_factor
            log(f"no gain for {config.lr_patience} epochs: lr -> {optimizer.param_groups[0]['lr']:.1e}")
    model.net.load_state_dict(best_state)
    model.net.eval()
    best = int(np.argmax(means))
    history = {"epochs": epochs, "best_epoch": best + 1, "best_val_mean_auroc": means[best],
               "stop_reason": stop_reason, "images_per_epoch": per_epoch, "pos_weight": pos_weight.tolist(),
               "initialisation": initialisation, "val_undefined": undefined, "bf16": bf16}
    log(f"best epoch {best + 1} (val mean AUROC {means[best]:.4f}); {stop_reason}")
    if out_dir is not None:
        model.save(Path(out_dir) / "classifier.pt", history)
    return model, history
