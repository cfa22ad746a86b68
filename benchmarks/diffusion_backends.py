"""Which diffusion library to build the diffusion model on: diffusers' ``UNet2DModel`` against
MONAI's ``DiffusionModelUNet`` at the same architecture, measured in one run on this machine.

    python benchmarks/diffusion_backends.py                  # 2 threads, 32x32, both libraries
    python benchmarks/diffusion_backends.py --threads 1 --channels 16,32,64

Both UNets get the same levels (``--channels``), one residual block per level and
self-attention in the middle block; their parameter counts are printed to show that they are
the same network. Reported per library: training images/s (one Adam step on the denoising
loss, batch ``--batch``) and denoiser evaluations/s in inference mode (batch 256; a sampler
with S steps and classifier-free guidance costs 2 x S evaluations per image), each the best
of ``--repeats`` timings, contiguous and channels-last. MONAI's attention needs ``einops``
(a dev dependency). The samplers are not timed: diffusers' DPM-Solver++ needs fewer steps than
the DDIM that MONAI offers, which the step counts in docs/diffusion.md account for.
"""

from __future__ import annotations

import argparse
import time

import torch


def build(library: str, channels: tuple[int, ...], resolution: int):
    """(network, forward(x, t) -> prediction) with the time embedding alone as condition."""
    if library == "diffusers":
        from diffusers import UNet2DModel

        net = UNet2DModel(sample_size=resolution, in_channels=1, out_channels=1, block_out_channels=channels,
                          layers_per_block=1, down_block_types=("DownBlock2D",) * len(channels),
                          up_block_types=("UpBlock2D",) * len(channels), add_attention=True,
                          attention_head_dim=channels[-1], norm_num_groups=8)
        return net, lambda x, t: net(x, t).sample
    from monai.networks.nets import DiffusionModelUNet

    net = DiffusionModelUNet(spatial_dims=2, in_channels=1, out_channels=1, channels=channels,
                             attention_levels=(False,) * len(channels), num_res_blocks=1,
                             num_head_channels=channels[-1], norm_num_groups=8)
    return net, lambda x, t: net(x, t)


def best_rate(work, images: int, repeats: int) -> float:
    work()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return images / best


def measure(library: str, channels: tuple[int, ...], resolution: int, batch: int, repeats: int,
            channels_last: bool) -> dict:
    torch.manual_seed(0)
    net, forward = build(library, channels, resolution)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    opt = torch.optim.Adam(net.parameters(), 1e-4)
    x = torch.randn(batch, 1, resolution, resolution).contiguous(memory_format=fmt)
    t = torch.randint(0, 1000, (batch,))

    def train_step() -> None:
        loss = forward(x, t).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    xs = torch.randn(256, 1, resolution, resolution).contiguous(memory_format=fmt)
    ts = torch.full((256,), 500)

    def denoise() -> None:
        with torch.inference_mode():
            forward(xs, ts)

    return {"params": sum(p.numel() for p in net.parameters()),
            "train": best_rate(train_step, batch, repeats), "eval": best_rate(denoise, 256, repeats)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", default="32,64,64", help="feature maps per UNet level")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    channels = tuple(int(c) for c in args.channels.split(","))
    print(f"UNet levels {channels}, {args.resolution}x{args.resolution}, {args.threads} threads, torch "
          f"{torch.__version__}")
    print(f"{'library':10} {'layout':14} {'parameters':>10} {'train img/s':>12} {'denoiser evals/s':>17}")
    for channels_last in (False, True):
        for library in ("diffusers", "monai"):
            r = measure(library, channels, args.resolution, args.batch, args.repeats, channels_last)
            layout = "channels-last" if channels_last else "contiguous"
            print(f"{library:10} {layout:14} {r['params']:>10,} {r['train']:>12.0f} {r['eval']:>17.0f}")


if __name__ == "__main__":
    main()
