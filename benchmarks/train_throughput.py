"""Generator training throughput: real images/s, FLOPs per step, and achieved FLOP/s against the
machine's matmul peak measured in the same run; and sampling images/s.

    python benchmarks/train_throughput.py                      # both GANs, cpu widths, CPU
    python benchmarks/train_throughput.py --widths paper --device cuda --bf16 --channels-last
    python benchmarks/train_throughput.py --models cpdgan diffusion --widths cpu paper --device cuda --bf16

A GAN's step is exactly the training loop's ``gan_step`` (critic step with gradient penalty,
generator step); the diffusion model's is ``DiffusionTraining.step`` (one denoising-loss Adam
step). Sampling is the generator's own ``sample`` on ``--sample-batch`` labels: one forward pass
for a GAN, the preset's solver steps with classifier-free guidance for the diffusion model
(its ``sample_bf16`` follows ``--bf16``). FLOPs are counted with torch's FLOP formulas
(``flop_registry``, the ones ``FlopCounterMode`` uses) over every op dispatched, the penalty's
double backward included;
``FlopCounterMode`` itself cannot be used here: its module hooks break ``autograd.grad``. The peak is the best of a few
square float32 (or bfloat16 with --bf16) matrix products of the same device.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from synthmed.training.config import load_config
from synthmed.training.diffusion import DiffusionTraining
from synthmed.training.distributed import Dist
from synthmed.training.gan import build_generator_pair, gan_step


class FlopCount(TorchDispatchMode):
    """Sums the FLOPs of every matmul/convolution op dispatched inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 5) -> float:
    """Best FLOP/s of a size x size matrix product."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = 0.0
    for _ in range(repeats + 1):
        _sync(device)
        start = time.perf_counter()
        (a @ b).sum().item()
        _sync(device)
        best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build_step(model: str, config, args, device: torch.device, batch: int):
    """(one training step, the sampler, the trained networks) of ``model`` at ``args.resolution``."""
    noise = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(batch, 1, args.resolution, args.resolution, device=device) * 2 - 1
    y = torch.nn.functional.one_hot(torch.randint(0, args.labels, (batch,)), args.labels).float().to(device)
    if model == "diffusion":
        training = DiffusionTraining(config, args.resolution, args.labels, 1, device)
        return (lambda: training.step(x, y, noise, Dist())), training.sampler, [training.model]
    generator, discriminator = build_generator_pair(config, args.resolution, args.labels, 1)
    generator, discriminator = generator.to(device), discriminator.to(device)
    if model == "proggan":  # measured after growth, at the final resolution
        for net in (generator, discriminator):
            net.set_growth(args.resolution, 1.0)
    if config.channels_last:
        discriminator = discriminator.to(memory_format=torch.channels_last)
    if args.compile:
        generator, discriminator = torch.compile(generator), torch.compile(discriminator)
    adam = dict(lr=config.learning_rate, betas=config.betas, eps=config.eps)
    opt_g, opt_d = torch.optim.Adam(generator.parameters(), **adam), torch.optim.Adam(discriminator.parameters(), **adam)
    if config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return (lambda: gan_step(generator, discriminator, opt_g, opt_d, x, y, config, noise)), generator, \
        [generator, discriminator]


def sampling_rate(sampler, args, device: torch.device) -> float:
    """Images/s of ``sampler.sample`` on ``--sample-batch`` labels, the best of five timings after a warm-up
    (a GAN's is uncompiled: ``--compile`` compiles the training step only)."""
    labels = torch.nn.functional.one_hot(torch.arange(args.sample_batch) % args.labels, args.labels).float().to(device)

    def seconds(seed: int) -> float:
        _sync(device)
        start = time.perf_counter()
        with torch.no_grad():
            sampler.sample(labels, torch.Generator().manual_seed(seed))
        _sync(device)
        return time.perf_counter() - start

    seconds(0)  # warm-up
    return args.sample_batch / min(seconds(seed) for seed in range(1, 6))


def measure(model: str, widths: str, args, device: torch.device) -> dict:
    config = load_config(f"{model}-{widths}").for_resolution(args.resolution)
    overrides = {"bf16": args.bf16, "channels_last": args.channels_last}
    if model == "diffusion":
        overrides["sample_bf16"] = args.bf16
    config = dataclasses.replace(config, **overrides)
    batch = args.batch or (config.batch_at(args.resolution) if model == "proggan" else config.batch_size)
    torch.manual_seed(0)
    step, sampler, networks = build_step(model, config, args, device, batch)
    with FlopCount() as counter:
        step()
    flops = counter.total
    for _ in range(args.warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(device)
    seconds = (time.perf_counter() - start) / args.steps
    params = sum(p.numel() for net in networks for p in net.parameters())
    return {"model": model, "widths": widths, "batch": batch, "params_M": params / 1e6,
            "gflop_per_step": flops / 1e9, "step_ms": seconds * 1e3, "images_per_s": batch / seconds,
            "tflops": flops / seconds / 1e12, "sample_per_s": sampling_rate(sampler, args, device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["cpdgan", "proggan"],
                        choices=["cpdgan", "proggan", "diffusion"])
    parser.add_argument("--widths", nargs="+", default=["cpu"], help="cpu and/or paper")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--labels", type=int, default=2)
    parser.add_argument("--batch", type=int, default=0, help="0 = the preset's batch")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--sample-batch", type=int, default=256, help="labels per timed sampling call")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the GANs' training step")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    peak = matmul_peak(device, dtype, 8192 if device.type == "cuda" else 2048)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; resolution {args.resolution}; "
          f"bf16={args.bf16} channels_last={args.channels_last} compile={args.compile}")
    print(f"matmul peak ({dtype}): {peak / 1e12:.3f} TFLOP/s")
    print(f"{'model':9} {'widths':6} {'batch':>5} {'params':>8} {'GFLOP/step':>10} {'ms/step':>8} "
          f"{'img/s':>8} {'TFLOP/s':>8} {'of peak':>7} {'sample img/s':>12}")
    for widths in args.widths:
        for model in args.models:
            r = measure(model, widths, args, device)
            print(f"{r['model']:9} {r['widths']:6} {r['batch']:>5} {r['params_M']:>7.2f}M {r['gflop_per_step']:>10.2f} "
                  f"{r['step_ms']:>8.1f} {r['images_per_s']:>8.1f} {r['tflops']:>8.3f} "
                  f"{r['tflops'] * 1e12 / peak:>7.1%} "
                  f"{r['sample_per_s']:>12.1f}")


if __name__ == "__main__":
    main()
