"""Occlusion maps per second: synthmed's windowed, batched occlusion against MONAI's OcclusionSensitivity.

    python benchmarks/occlusion_speed.py                                   # 224 px, 16 px patches, CPU
    python benchmarks/occlusion_speed.py --size 64 --channels 1 --patch 2  # native 64 px, the paper's patch
    python benchmarks/occlusion_speed.py --size 224 --patch 2 --device cuda

Both get the same DenseNet-121 (seeded random weights, or ``--weights`` a classifier.pt from
``evaluate utility``), the same input image and the same masks: ``patch`` x ``patch`` squares
set to zero, side by side (stride = patch). MONAI is configured to compute exactly that:
``mask_size=patch``, ``overlap=0`` (its sliding window then steps by the mask size and places
the last window flush with the edge, as ours), ``mode=0.0`` (multiply by 0, add 0),
``n_batch`` = our batch size and ``activate=False``, so its map holds, at every pixel, the
logits of the copy whose patch covers that pixel. Those logits are turned into the same map as
ours (BCE summed over labels against the label vector, increase over the unmasked loss,
floored at 0, divided by the maximum) and the two maps are compared. After one untimed round
the runs alternate (MONAI, ours, MONAI, ours...) and the best time of each is kept, so that load from other
processes on the machine hurts both alike; the load average is printed. On CUDA, TF32 is
switched off so both sides compute in float32.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import DenseNet121
from monai.visualize import OcclusionSensitivity
from torch import nn

from synthmed.evaluation.importance import losses_to_map, mask_positions, masked_losses, occlusion_map


def monai_losses(net: nn.Module, image: torch.Tensor, target: torch.Tensor, patch: int, batch: int) -> np.ndarray:
    """MONAI's occlusion logits -> the loss of every masked copy, (rows x columns of patch positions)."""
    occlusion = OcclusionSensitivity(net, mask_size=patch, n_batch=batch, verbose=False, mode=0.0, overlap=0.0,
                                     activate=False)
    logits, _ = occlusion(image[None])  # (1, labels, H, W): each pixel holds the logits of its patch's copy
    rows = torch.as_tensor(mask_positions(image.shape[-2], patch, patch), device=logits.device)
    cols = torch.as_tensor(mask_positions(image.shape[-1], patch, patch), device=logits.device)
    corner = logits.as_tensor()[0][:, rows[:, None], cols[None, :]].permute(1, 2, 0).double()  # (R, C, labels)
    loss = F.binary_cross_entropy_with_logits(corner, target.double().expand_as(corner), reduction="none").sum(-1)
    return loss.cpu().numpy()


def load_model(args: argparse.Namespace, device: torch.device) -> tuple[nn.Module, int, int, int]:
    """The network, its input channels and size, and its number of labels."""
    if args.weights:
        from synthmed.evaluation.classifier import load_classifier

        classifier, _ = load_classifier(args.weights, device=str(device))
        size = classifier.config.input_size or args.size
        channels = 3 if classifier.config.input_size else classifier.image_channels
        return classifier.net.eval(), channels, size, len(classifier.label_names)
    torch.manual_seed(args.seed)
    net = DenseNet121(spatial_dims=2, in_channels=args.channels, out_channels=args.labels)
    return net.to(device).eval(), args.channels, args.size, args.labels


def timed(run) -> tuple[float, object]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224, help="input side in px (with --weights: its input_size)")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--labels", type=int, default=2)
    parser.add_argument("--patch", type=int, default=16, help="side of the zeroed square; the stride is the same")
    parser.add_argument("--batch", type=int, default=64, help="masked copies per forward pass, both sides")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each side after a warm-up; best kept")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch's default")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                        help="run our side on the network as it is (MONAI always does)")
    parser.add_argument("--weights", default=None, help="a classifier.pt from `evaluate utility`")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    net, channels, size, labels = load_model(args, device)
    if size % args.patch:
        raise SystemExit(f"--patch {args.patch} must divide the input size {size}: MONAI averages the logits of "
                         "overlapping windows, so its last, edge-flush window would not be one masked copy")
    generator = torch.Generator().manual_seed(args.seed)
    image = torch.randn(channels, size, size, generator=generator).to(device)
    target = torch.zeros(labels, device=device)
    target[0] = 1
    masks = len(mask_positions(size, args.patch, args.patch)) ** 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; load average {os.getloadavg()[0]:.1f}; DenseNet-121 "
          f"{channels}x{size}x{size}, {labels} labels; patch {args.patch} (stride {args.patch}): {masks} masks per map; "
          f"batch {args.batch}; channels_last={args.channels_last}")

    times: dict[str, list[float]] = {"monai": [], "ours": []}
    for repeat in range(args.repeats + 1):  # the first round warms up (kernel choice, oneDNN primitives) untimed
        seconds, theirs = timed(lambda: monai_losses(net, image, target, args.patch, args.batch))
        times["monai"] += [seconds] if repeat else []
        seconds, ours = timed(lambda: occlusion_map(net, image[None], target[None], args.patch, args.patch,
                                                    args.batch, args.channels_last)[0])
        times["ours"] += [seconds] if repeat else []
    own_losses, base_loss = masked_losses(net, image, target, args.patch, args.patch, args.batch)
    their_map = losses_to_map(theirs, base_loss, (size, size), args.patch, args.patch)
    best = {side: min(values) for side, values in times.items()}
    for side in ("monai", "ours"):
        runs = ", ".join(f"{t:.2f}" for t in times[side])
        print(f"{side:6} {1 / best[side]:8.3f} maps/s  {masks / best[side]:9.1f} masked images/s  (runs: {runs} s)")
    print(f"speed-up ours / MONAI: {best['monai'] / best['ours']:.2f}x")
    increase = np.maximum(theirs - base_loss, 0).max()
    print(f"max |loss difference| per masked copy: {np.abs(own_losses - theirs).max():.2e} "
          f"(largest loss increase {increase:.2e}, unmasked loss {base_loss:.4f})")
    print(f"max |map difference| (maps normalised to [0, 1]): {np.abs(ours - their_map).max():.2e}")


if __name__ == "__main__":
    main()
