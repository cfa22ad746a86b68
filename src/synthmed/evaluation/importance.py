"""Occlusion attribution maps (paper S.7, after Schwab and Karlen) and how alike two of them are.

A square patch is set to zero, the loss of the masked image is computed, and the increase over
the loss of the unmasked image is that patch's importance. The loss is binary cross-entropy on
the logits, summed over the labels, against the image's true label vector (no learning: the
test labels are known). Increases are floored at 0 (a patch whose removal helps carries no
importance), a pixel covered by several patches (stride < patch) gets their mean, and each map
is divided by its maximum (an all-zero map stays zero).

Where the zero goes: the paper zero-masks the image. Here the patch is zeroed in the network's
input, i.e. after the classifier's resize and ImageNet normalisation (a zero there is the
ImageNet mean colour, a mid grey; a native-size classifier sees ``x / 255``, where zero is black
as in the paper) and at the classifier's input resolution, so a 2x2 patch at 224x224 is the
paper's 2x2 patch and the maps come out at the input resolution.

Speed, without changing what is computed: masked copies go through the network in batches of
``batch_size`` (which bounds the memory) under ``torch.inference_mode``, the unmasked image's
activations are computed once per image and reused by every batch, and in the layers a mask
cannot reach everywhere yet only the part it can reach is recomputed.
A copy differs from the unmasked image only inside the patch; after a k x k convolution only
inside the patch grown by the kernel, and so on. Until that region covers the whole feature
map (in DenseNet-121 at 224 px: through the first dense block and part of the second), each
convolution or pooling layer is evaluated on a window around the region, the rest of its
input taken from the unmasked forward; windows are gathered channels-last. Convolutions
(zero padding, no dilation), max/average pooling, batch norm in eval mode, ReLU, sequential
containers and MONAI's dense layers are handled this way; any other module gets the masked
copies in full, so every network works (the window only saves time). For DenseNet-121 this
halves the convolution FLOPs at 224 px (16 px patches: 2.0x fewer, 2 px: 2.2x) but saves little
at 64 px (1.4x), where the receptive field covers the map after the first block. The memo of
unmasked activations holds the windowed layers' outputs: about 200 MB at 224 px.

Where the data know where each finding is (lesion masks, ``phantom-cxr``), a map is also scored
against the truth: the share of its mass inside the lesions and the pointing game (``lesion_scores``).
"""

from __future__ import annotations

import copy
import os
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.metrics.regression import compute_ssim_and_cs
from monai.networks.nets import DenseNet
from monai.networks.nets.densenet import _DenseLayer
from scipy import ndimage
from torch import Tensor, nn

from synthmed._io import write_with_atomic
from synthmed.errors import ConfigError
from synthmed.evaluation.stats import SPREAD_DDOF, mean_std

if TYPE_CHECKING:
    from synthmed.evaluation.classifier import Classifier

SSIM_WINDOW = 11  # Gaussian SSIM window (sigma 1.5, k1 0.01, k2 0.03, data range 1): the usual settings
SSIM_SIGMA = 1.5
POINTING_TOLERANCE = 0  # px of the map: the peak itself must lie in the lesion (why: ``pointing_hit``)
_POINTWISE = (nn.BatchNorm2d, nn.ReLU, nn.Identity, nn.Dropout)  # in eval mode: position by position


# ---- geometry ----------------------------------------------------------------------------------


def mask_positions(size: int, patch: int, stride: int) -> np.ndarray:
    """Top (or left) edges of the patches along one axis: every ``stride`` px, the last flush with the edge."""
    if not 1 <= patch <= size or stride < 1:
        raise ConfigError(f"patch = {patch}, stride = {stride}: need 1 <= patch <= {size} (the classifier's input "
                          "size) and stride >= 1")
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:  # as MONAI's sliding window: the image is covered to its last pixel
        starts.append(size - patch)
    return np.asarray(starts)


def _cover(starts: np.ndarray, patch: int, size: int) -> np.ndarray:
    """(n_positions, size) 0/1: which pixels each patch covers along one axis."""
    pixels = np.arange(size)
    return ((pixels >= starts[:, None]) & (pixels < starts[:, None] + patch)).astype(np.float64)


def losses_to_map(losses: np.ndarray, base_loss: float, shape: tuple[int, int], patch: int,
                  stride: int) -> np.ndarray:
    """Loss per patch position (rows x columns) -> the normalised (H, W) map.

    The floored increase is spread over the patch's pixels; separable, so the sum over
    positions is ``R.T @ increase @ C`` with R, C the row and column cover matrices.
    """
    rows = _cover(mask_positions(shape[0], patch, stride), patch, shape[0])
    cols = _cover(mask_positions(shape[1], patch, stride), patch, shape[1])
    increase = np.maximum(np.asarray(losses, np.float64) - base_loss, 0.0)
    total = rows.T @ increase @ cols
    count = rows.T @ np.ones_like(increase) @ cols
    spread = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    peak = spread.max()
    return (spread / peak if peak > 0 else spread).astype(np.float32)


# ---- windowed forward --------------------------------------------------------------------------


@dataclass
class _Window:
    """A batch of masked copies that differ from the unmasked activation only inside a box each.

    ``base`` (1, C, H, W) is the unmasked activation, ``values`` (B, C, h, w) the copies inside
    their box, whose top-left corners are ``top``/``left`` (B,). All boxes share one size.
    """

    base: Tensor
    values: Tensor
    top: Tensor
    left: Tensor


class _Memo:
    """The unmasked image's activations, computed once per image and reused by every batch of masks."""

    def __init__(self) -> None:
        self._store: dict[str, Tensor] = {}

    def get(self, key: str, compute: Callable[[], Tensor]) -> Tensor:
        if key not in self._store:
            self._store[key] = compute()
        return self._store[key]


def _overlay(base_hwc: Tensor, window: _Window, top: Tensor, left: Tensor, size: tuple[int, int],
             offset: tuple[int, int] = (0, 0)) -> Tensor:
    """The (B, C, *size) region at ``top``/``left`` (per copy) of each copy: its box, elsewhere the base.

    ``base_hwc`` is the unmasked map as (H, W, C), padded by ``offset`` (rows, columns) on each
    side; ``top``/``left`` are in its coordinates. The box may have fewer channels than the base
    (the first ones); the others are left as in the base. Rows of C values are gathered with
    ``index_select`` and the boxes written over them with ``index_copy_`` (both plain row
    copies, far cheaper than advanced indexing); the result is channels-last, as convolutions like.
    """
    height, width = size
    count, channels, box_h, box_w = window.values.shape
    device, everything = top.device, base_hwc.shape[-1]
    spots = (top[:, None, None] + torch.arange(height, device=device)[:, None]) * base_hwc.shape[1]
    spots = spots + left[:, None, None] + torch.arange(width, device=device)
    out = base_hwc.reshape(-1, everything).index_select(0, spots.reshape(-1))
    rows = (window.top + offset[0] - top)[:, None, None] + torch.arange(box_h, device=device)[:, None]
    cols = (window.left + offset[1] - left)[:, None, None] + torch.arange(box_w, device=device)
    inside = ((rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)).reshape(-1)
    targets = (torch.arange(count, device=device)[:, None, None] * height + rows) * width + cols
    mine = window.values.permute(0, 2, 3, 1).reshape(-1, channels)
    if bool(inside.all()):
        out[:, :channels].index_copy_(0, targets.reshape(-1), mine)
    else:  # a box reaching past the region (an input row no output reads)
        out[:, :channels].index_copy_(0, targets.reshape(-1)[inside], mine[inside])
    return out.view(count, height, width, everything).permute(0, 3, 1, 2)


def _hwc(base: Tensor) -> Tensor:
    """(1, C, H, W) -> (H, W, C); free for a channels-last map."""
    return base[0].permute(1, 2, 0)


def _full(window: _Window) -> Tensor:
    """The masked copies in full, (B, C, H, W)."""
    zeros = torch.zeros_like(window.top)
    return _overlay(_hwc(window.base), window, zeros, zeros, tuple(window.base.shape[-2:]))


def _span(first_in: Tensor, size: int, kernel: int, stride: int, pad: int, n_out: int) -> tuple[Tensor, int]:
    """Along one axis: the output box (start per copy, common length) holding every output a box can change.

    Output ``o`` reads inputs ``o*stride - pad .. o*stride - pad + kernel - 1``.
    """
    first = torch.div(first_in + pad - kernel + stride, stride, rounding_mode="floor").clamp(min=0)
    last = torch.div(first_in + size - 1 + pad, stride, rounding_mode="floor").clamp(max=n_out - 1)
    length = min(max(int((last - first + 1).max()), 1), n_out)
    return first.clamp(max=n_out - length), length


def _pairs(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _local_geometry(module: nn.Module) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], float] | None:
    """(kernel, stride, padding, padding value) of a layer that can run on a window, else None."""
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros" or isinstance(module.padding, str) or _pairs(module.dilation) != (1, 1):
            return None
        return _pairs(module.kernel_size), _pairs(module.stride), _pairs(module.padding), 0.0
    if isinstance(module, nn.MaxPool2d):
        if module.ceil_mode or module.return_indices or _pairs(module.dilation) != (1, 1):
            return None
        return _pairs(module.kernel_size), _pairs(module.stride), _pairs(module.padding), float("-inf")
    if isinstance(module, nn.AvgPool2d) and not module.ceil_mode and _pairs(module.padding) == (0, 0):
        return _pairs(module.kernel_size), _pairs(module.stride), (0, 0), 0.0
    return None


def _unpadded(module: nn.Module) -> Callable[[Tensor], Tensor]:
    """The layer's operation with its padding left out (the window brings its own)."""
    if isinstance(module, nn.Conv2d):
        return lambda x: F.conv2d(x, module.weight, module.bias, module.stride, 0, 1, module.groups)
    if isinstance(module, nn.MaxPool2d):
        return lambda x: F.max_pool2d(x, module.kernel_size, module.stride, 0)
    return module  # average pooling without padding


def _windowed_layer(module: nn.Module, window: _Window, path: str, memo: _Memo,
                    geometry: tuple[tuple[int, int], tuple[int, int], tuple[int, int], float]) -> _Window | Tensor:
    """A convolution or pooling evaluated only on the box of outputs the copies' boxes can change."""
    kernel, stride, pad, fill = geometry
    base_out = memo.get(path, lambda: module(window.base))
    starts, lengths = [], []
    for axis, first_in in ((0, window.top), (1, window.left)):
        start, length = _span(first_in, window.values.shape[2 + axis], kernel[axis], stride[axis], pad[axis],
                              base_out.shape[2 + axis])
        starts.append(start)
        lengths.append(length)
    padded = memo.get(f"{path}:padded", lambda: _hwc(F.pad(window.base, (pad[1], pad[1], pad[0], pad[0]),
                                                            value=fill)).contiguous())
    size = ((lengths[0] - 1) * stride[0] + kernel[0], (lengths[1] - 1) * stride[1] + kernel[1])
    values = _unpadded(module)(_overlay(padded, window, starts[0] * stride[0], starts[1] * stride[1], size, pad))
    if tuple(lengths) == tuple(base_out.shape[-2:]):
        return values  # the box is the whole map: from here on the copies run in full
    return _Window(base_out, values, starts[0], starts[1])


def _dense_layer(layer: _DenseLayer, window: _Window, path: str, memo: _Memo) -> _Window | Tensor:
    """MONAI's dense layer, ``cat([x, layers(x)])``, gathered straight into the new part's (larger) box.

    The unmasked output (all channels) fills the box, the input's own box is written over its
    channels and the new part over the rest: one pass instead of a gather and a concatenation.
    """
    new = _forward(layer.layers, window, f"{path}.layers", memo)
    if isinstance(new, Tensor):
        return torch.cat([_full(window), new], 1)
    base = memo.get(path, lambda: torch.cat([window.base, new.base], 1).contiguous(memory_format=torch.channels_last))
    joined = _overlay(_hwc(base), window, new.top, new.left, tuple(new.values.shape[-2:]))
    joined[:, window.values.shape[1]:] = new.values
    return _Window(base, joined, new.top, new.left)


def _children(module: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """The modules a container runs one after the other, or None for a module with its own forward."""
    if isinstance(module, nn.Sequential):
        return list(module.named_children())
    if isinstance(module, DenseNet):  # forward: features, then class_layers
        return [("features", module.features), ("class_layers", module.class_layers)]
    return None


def _forward(module: nn.Module, x: _Window | Tensor, path: str, memo: _Memo) -> _Window | Tensor:
    """The module's output for the masked copies, as a window while the differences are local."""
    if isinstance(x, Tensor):
        return module(x)
    children = _children(module)
    if children is not None:
        for name, child in children:
            x = _forward(child, x, f"{path}.{name}", memo)
        return x
    if isinstance(module, _DenseLayer):
        return _dense_layer(module, x, path, memo)
    if isinstance(module, _POINTWISE):  # on a copy: in-place activations must not touch the memo
        return _Window(memo.get(path, lambda: module(x.base.clone())), module(x.values), x.top, x.left)
    geometry = _local_geometry(module)
    if geometry is not None:
        return _windowed_layer(module, x, path, memo, geometry)
    return module(_full(x))


# ---- occlusion ---------------------------------------------------------------------------------


def _loss(logits: Tensor, target: Tensor) -> Tensor:
    """BCE on the logits summed over labels, one value per row (float64 for the small differences)."""
    return F.binary_cross_entropy_with_logits(logits.double(), target.double().expand_as(logits),
                                              reduction="none").sum(1)


def masked_losses(net: nn.Module, image: Tensor, target: Tensor, patch: int = 2, stride: int = 2,
                  batch_size: int = 64) -> tuple[np.ndarray, float]:
    """Loss of the image with each patch zeroed, (rows x columns of positions), and the unmasked loss.

    ``image`` is one network input (C, H, W) on the network's device, ``target`` its label
    vector (L,). At most ``batch_size`` masked copies are in flight at once.
    """
    if net.training:
        raise ValueError("put the network in eval mode first (batch norm must use its running statistics)")
    _, height, width = image.shape
    row_starts, col_starts = mask_positions(height, patch, stride), mask_positions(width, patch, stride)
    grid = torch.cartesian_prod(torch.as_tensor(row_starts), torch.as_tensor(col_starts)).to(image.device)
    base = image[None]
    target = target.to(image.device)
    memo = _Memo()
    out = []
    with torch.inference_mode():
        base_loss = float(_loss(net(base), target)[0])
        for begin in range(0, len(grid), batch_size):
            corners = grid[begin:begin + batch_size]
            zeros = base.new_zeros((len(corners), base.shape[1], patch, patch))
            logits = _forward(net, _Window(base, zeros, corners[:, 0], corners[:, 1]), "", memo)
            out.append(_loss(logits, target).cpu())
    return torch.cat(out).numpy().reshape(len(row_starts), len(col_starts)), base_loss


def occlusion_map(net: nn.Module, inputs: Tensor, targets: Tensor, patch: int = 2, stride: int = 2,
                  batch_size: int = 64, channels_last: bool = True) -> np.ndarray:
    """Normalised occlusion maps (N, H, W) of network inputs (N, C, H, W) against labels (N, L).

    The patch is zeroed in ``inputs`` as given (for a ``Classifier``: after resize and normalisation).

    ``channels_last`` runs a channels-last copy of the network (the caller's is left as it is):
    the windows are gathered channels-last, and weights in the same layout spare a reorder per call.
    """
    if channels_last:
        net = copy.deepcopy(net).to(memory_format=torch.channels_last)
    maps = []
    for image, target in zip(inputs, targets):
        losses, base_loss = masked_losses(net, image, torch.as_tensor(target, dtype=torch.float32), patch, stride,
                                          batch_size)
        maps.append(losses_to_map(losses, base_loss, tuple(image.shape[-2:]), patch, stride))
    return np.stack(maps) if maps else np.zeros((0, *inputs.shape[-2:]), np.float32)


def classifier_maps(classifier: Classifier, images: np.ndarray, labels: np.ndarray, patch: int = 2, stride: int = 2,
                    batch_size: int = 64) -> np.ndarray:
    """Occlusion maps of a classifier for uint8 images (N, C, R, R) and their labels, at its input resolution."""
    classifier.check_images(images)
    classifier.net.eval()
    inputs = classifier.inputs(torch.from_numpy(np.ascontiguousarray(images)))
    return occlusion_map(classifier.net, inputs, torch.from_numpy(np.asarray(labels, np.float32)), patch, stride,
                         batch_size)


# ---- similarity --------------------------------------------------------------------------------


def pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation of two maps' pixels; None when either map is constant (undefined, not 0)."""
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    x, y = x - x.mean(), y - y.mean()
    norm = np.sqrt((x * x).sum() * (y * y).sum())
    return float(np.clip((x * y).sum() / norm, -1.0, 1.0)) if norm > 0 else None


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two maps in [0, 1]: MONAI's, Gaussian window 11, sigma 1.5, k1 0.01, k2 0.03, data range 1.

    The mean runs over the windows that lie inside the map (no padding invents border values).
    """
    x, y = (torch.as_tensor(np.asarray(m, np.float32))[None, None] for m in (a, b))
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"maps need at least {SSIM_WINDOW} px per side for SSIM, got {tuple(x.shape[-2:])}")
    value, _ = compute_ssim_and_cs(x, y, spatial_dims=2, kernel_size=[SSIM_WINDOW] * 2,
                                   kernel_sigma=[SSIM_SIGMA] * 2, data_range=1.0)
    return float(value.mean())


def map_similarity(a: np.ndarray, b: np.ndarray) -> dict[str, float | None]:
    """How alike two attribution maps of one image are: Pearson correlation and SSIM."""
    if np.shape(a) != np.shape(b):
        raise ValueError(f"maps differ in shape: {np.shape(a)} vs {np.shape(b)}")
    return {"pearson": pearson(a, b), "ssim": ssim(a, b)}


def summary(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean and standard deviation (``stats.mean_std``) over the defined values, and how many were defined."""
    defined = [v for v in values if v is not None]
    if not defined:
        return {"mean": None, "std": None, "ddof": SPREAD_DDOF, "n_defined": 0}
    spread = mean_std(defined)
    return {"mean": spread["mean"], "std": spread["std"], "ddof": spread["ddof"], "n_defined": spread["n"]}


# ---- scores against the truth: lesion masks ------------------------------------------------------
#
# Where the data know where each finding is (phantom stores keep a lesion mask per finding), a map
# can be scored against the truth instead of only against another map.


def _overlap(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) bool: which input pixels each output pixel overlaps along one axis (both span [0, 1))."""
    out = np.arange(n_out)
    first = out * n_in // n_out
    last = ((out + 1) * n_in + n_out - 1) // n_out  # exclusive: ceil((o + 1) * n_in / n_out)
    pixels = np.arange(n_in)
    return (pixels >= first[:, None]) & (pixels < last[:, None])


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A bool mask (h, w) at ``shape``: a pixel is in the mask when any part of it overlaps a mask pixel.

    The store's own rule (``imaging.mask_pyramid``: a pixel is in a finding's mask when any part
    of it is): halving is its max pooling, an integer enlargement (32 -> 224 px) is nearest
    neighbour, and a fractional one (64 -> 224 px) keeps every map pixel that touches the lesion.
    """
    mask = np.asarray(mask, bool)
    rows, cols = _overlap(shape[0], mask.shape[0]), _overlap(shape[1], mask.shape[1])
    return (rows.astype(np.int64) @ mask.astype(np.int64) @ cols.T.astype(np.int64)) > 0


def mask_area_share(mask: np.ndarray) -> float | None:
    """The mask's share of the image area: the in-mask share of a uniform map, the chance level to judge a
    map's in-mask share by (and, with tolerance 0, a random point's chance to hit); None for an empty mask."""
    mask = np.asarray(mask, bool)
    return float(mask.mean()) if mask.any() else None


def in_mask_share(attribution: np.ndarray, mask: np.ndarray) -> float | None:
    """Share of the attribution mass that lies inside the mask: the relevance mass accuracy of Arras,
    Osman and Samek 2022 ("CLEVR-XAI"); with a box for the mask, Score-CAM's energy-based pointing game.

    Negative values are floored at 0 (an occlusion map has none) and the map divided by its sum.
    None when the mask is empty or the map carries no mass: undefined, not 0.
    """
    mass, mask = _mass_and_mask(attribution, mask)
    total = mass.sum()
    if total <= 0 or not mask.any():
        return None
    return float(mass[mask].sum() / total)


def pointing_hit(attribution: np.ndarray, mask: np.ndarray, tolerance: int = POINTING_TOLERANCE) -> bool | None:
    """The pointing game (Zhang et al. 2016, "Top-down neural attention by excitation backprop"): a hit
    when the map's maximum lies within ``tolerance`` pixels of the mask.

    The reference scores a 15 px tolerance at about 224 px, to absorb the slack of hand-drawn
    boxes (TorchRay's ``PointingGame``: a hit when the mask meets the disc of radius < tolerance
    around the point). Lesion masks are exact, and resizing them to the map already lets every
    map pixel that touches a lesion count; a tolerance of 15/224 of the side would be 2 px at
    32 px, a whole occlusion patch, so the patch beside the lesion would hit. Hence tolerance 0:
    the maximum itself must lie in the mask, and a random point hits as often as the mask's area
    share (``mask_area_share``).

    Ties: the reference takes ``argmax`` (the first maximum in row order, an arbitrary pick). An
    occlusion map spreads a patch's importance evenly over its pixels, so its maximum is always
    a tie over at least one patch: the hit is whether any tied maximum lies within tolerance of the
    mask, i.e. whether the most important patch touches the lesion. None when the mask is empty or
    the map is constant (all zero included), as a constant map points nowhere.
    """
    if tolerance < 0:
        raise ConfigError(f"pointing-game tolerance = {tolerance}: must be at least 0 (pixels of the map)")
    values, mask = _mass_and_mask(attribution, mask)
    if not mask.any() or values.max() == values.min():
        return None
    if tolerance > 0:  # TorchRay's acceptance disc: distance < tolerance
        offsets = np.arange(-tolerance + 1, tolerance)
        disc = offsets[:, None] ** 2 + offsets[None, :] ** 2 < tolerance ** 2
        mask = ndimage.binary_dilation(mask, structure=disc)
    return bool(mask[values == values.max()].any())


def _mass_and_mask(attribution: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The map floored at 0 (float64) and the mask as bool, checked to share one shape."""
    attribution, mask = np.asarray(attribution, np.float64), np.asarray(mask, bool)
    if attribution.shape != mask.shape or attribution.ndim != 2:
        raise ValueError(f"map {attribution.shape} and mask {mask.shape} must be one (H, W) shape")
    return np.maximum(attribution, 0.0), mask


def hit_rate(hits: Sequence[bool | None]) -> dict[str, Any]:
    """Share of hits among the defined pointing-game results, with their count (None: undefined, left out)."""
    defined = [hit for hit in hits if hit is not None]
    return {"rate": sum(defined) / len(defined) if defined else None, "hits": int(sum(defined)),
            "n_defined": len(defined)}


def lesion_union(masks: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The union of the lesion masks of the labels that are set: masks (..., L, R, R), labels (..., L) -> (..., R, R)."""
    return (np.asarray(masks, bool) & np.asarray(labels, bool)[..., None, None]).any(-3)


def lesion_scores(maps: dict[str, Sequence[np.ndarray]], masks: np.ndarray, labels: np.ndarray,
                  label_names: Sequence[str], tolerance: int = POINTING_TOLERANCE) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each role's maps (``{"real": [...], "synthetic": [...]}``, (H, W) each) scored against the lesions.

    ``masks`` (N, L, R, R) and ``labels`` (N, L) are the explained images' lesion masks and labels,
    columns as ``label_names``. An image is scored against the union of its labels' masks, and per
    label against that label's own mask (so a label whose attribution left its lesion shows). Per
    image: the mask's area share (a uniform map's score), and per role the in-mask share and the
    pointing hit; then their summaries (``summary``, ``hit_rate``) over images and per label. An
    image without a lesion (no finding, or "No Finding") is undefined, left out of the summaries.
    """
    per_image = []
    for i, (image_masks, image_labels) in enumerate(zip(np.asarray(masks, bool), np.asarray(labels, bool))):
        image_maps = {role: role_maps[i] for role, role_maps in maps.items()}
        per_image.append({**_scored(image_maps, lesion_union(image_masks, image_labels), tolerance),
                          "by_label": {label_names[j]: _scored(image_maps, image_masks[j], tolerance)
                                       for j in np.flatnonzero(image_labels)}})
    by_label = {name: _lesion_summary([entry["by_label"][name] for entry in per_image if name in entry["by_label"]],
                                      list(maps)) for name in label_names}
    return per_image, {"images": _lesion_summary(per_image, list(maps)), "by_label": by_label}


def _scored(image_maps: dict[str, np.ndarray], mask: np.ndarray, tolerance: int) -> dict[str, Any]:
    """One image's maps against one mask (resized to the maps): area share, per role in-mask share and hit."""
    mask = resize_mask(mask, np.shape(next(iter(image_maps.values()))))
    return {"area_share": mask_area_share(mask), **{
        role: {"in_mask_share": in_mask_share(image_map, mask), "pointing_hit": pointing_hit(image_map, mask, tolerance)}
        for role, image_map in image_maps.items()}}


def _lesion_summary(entries: Sequence[dict[str, Any]], roles: Sequence[str]) -> dict[str, Any]:
    """Mean/std of the area and in-mask shares and the pointing-game hit rate over scored images."""
    return {"n_images": len(entries), "area_share": summary([entry["area_share"] for entry in entries]), **{
        role: {"in_mask_share": summary([entry[role]["in_mask_share"] for entry in entries]),
               "pointing": hit_rate([entry[role]["pointing_hit"] for entry in entries])} for role in roles}}


# ---- choosing images and drawing them ---------------------------------------------------------------


def spread_sample(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Row indices of ``n`` images, taken in turn from each label combination (seeded order within each)."""
    rng = np.random.default_rng(seed)
    combos, inverse = np.unique(np.asarray(labels), axis=0, return_inverse=True)
    queues = [list(rng.permutation(np.flatnonzero(inverse.ravel() == k))) for k in range(len(combos))]
    chosen: list[int] = []
    while len(chosen) < n and any(queues):
        chosen += [int(queue.pop(0)) for queue in queues if queue][: n - len(chosen)]
    return np.asarray(chosen, dtype=np.int64)


def _display(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """(C, H, W) uint8 -> what imshow takes, and the colour map for grey images."""
    return (image[0], "gray") if image.shape[0] == 1 else (np.moveaxis(image[:3], 0, -1), None)


def importance_figure(images: np.ndarray, real_maps: np.ndarray, synthetic_maps: np.ndarray, titles: Sequence[str],
                      path: str | os.PathLike, scores: Sequence[dict[str, float | None]] | None = None,
                      lesions: Sequence[np.ndarray | None] | None = None,
                      lesion_scores: Sequence[dict[str, dict[str, Any]] | None] | None = None) -> None:
    """PNG with one row per image: the image (titled, e.g. with its labels), the real-data and the
    synthetic-data classifier's map (as the paper's Figures 6-7); written atomically.

    ``lesions``: per image a bool mask at the maps' size (or None), outlined over both maps;
    ``lesion_scores``: per image ``{"real": ..., "synthetic": ...}`` with each map's
    ``in_mask_share`` and ``pointing_hit``, written under its map.
    Uses Matplotlib's object API (Agg canvas), so no global pyplot state is touched.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 2.5 * len(images)), layout="constrained")
    axes = figure.subplots(len(images), 3, squeeze=False)
    for i, image in enumerate(images):
        picture, cmap = _display(np.asarray(image))
        axes[i, 0].imshow(picture, cmap=cmap, vmin=0, vmax=255)
        axes[i, 0].set_title(textwrap.fill(titles[i], 28), fontsize=9)  # long label lists wrap
        similarity = scores[i] if scores is not None else None
        lesion = lesions[i] if lesions is not None else None
        for column, (role, maps) in enumerate((("real", real_maps), ("synthetic", synthetic_maps)), start=1):
            shown = axes[i, column].imshow(maps[i], cmap="inferno", vmin=0, vmax=1)
            title = f"{role}-data classifier"
            if role == "synthetic" and similarity is not None:
                title += f"\nPearson {_number(similarity['pearson'])}, SSIM {_number(similarity['ssim'])}"
            if lesion is not None:
                axes[i, column].contour(lesion.astype(np.float32), levels=[0.5], colors="cyan", linewidths=0.8)
            if lesion_scores is not None and lesion_scores[i] is not None:
                title += "\n" + _lesion_words(lesion_scores[i][role])
            axes[i, column].set_title(title, fontsize=9)
        for axis in axes[i]:
            axis.set_axis_off()
    figure.colorbar(shown, ax=axes[:, 1:].ravel().tolist(), shrink=0.6, label="importance (normalised)")
    write_with_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100), suffix=".png")


def _lesion_words(score: dict[str, Any]) -> str:
    """A map's scores against the lesion outline, short enough for a figure title."""
    if score["in_mask_share"] is None and score["pointing_hit"] is None:
        return "no lesion to score"
    hit = {True: "yes", False: "no", None: "undefined"}[score["pointing_hit"]]
    return f"in lesion {_number(score['in_mask_share'])} · peak in: {hit}"


def _number(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.2f}"
