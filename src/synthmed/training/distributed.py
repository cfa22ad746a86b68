"""Data-parallel training across processes started by ``torchrun`` (one node or several).

Each process computes gradients on its share of the global batch; gradients are averaged
with one all-reduce per network and step. (The gradient penalty needs a double backward
through the discriminator, which ``DistributedDataParallel``'s reducer does not support,
so gradients are reduced explicitly, as StyleGAN2-ADA does.) Single-process runs skip all
of this.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env(device_type: str) -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Dist()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        # each process's own GPU as its current device, before NCCL starts: otherwise every process also opens a
        # CUDA context on GPU 0 (the default current device), and barrier, which takes no tensor, has to guess
        # each rank's GPU (PyTorch warns that a wrong guess can hang)
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Dist(dist.get_rank(), world_size, local_rank)


def average_gradients(module: torch.nn.Module, env: Dist) -> None:
    """All-reduce (mean) every gradient of ``module`` in one flattened buffer."""
    if not env.enabled:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= env.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def sum_over_ranks(tensor: torch.Tensor, env: Dist) -> torch.Tensor:
    """The sum of ``tensor`` over the ranks (itself where there is one process)."""
    if not env.enabled:
        return tensor
    total = tensor.clone()
    dist.all_reduce(total)
    return total


def broadcast_float(value: float, env: Dist, device: torch.device) -> float:
    """Rank 0's value on every rank (e.g. the FID that decides whether to stop)."""
    if not env.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


def share_from_main(modules: dict[str, torch.nn.Module], env: Dist, device: torch.device) -> None:
    """Rank 0's state dicts (weights, buffers and extra state, e.g. what a method fitted on the data before the
    first step) loaded on every rank."""
    if not env.enabled:
        return
    states = [{name: _on_cpu(module.state_dict()) for name, module in modules.items()} if env.is_main else None]
    dist.broadcast_object_list(states, src=0, device=device)
    for name, module in modules.items():
        module.load_state_dict(states[0][name])


def _on_cpu(value):
    """A state dict with every tensor on the CPU (nested dicts too), so that it unpickles on any rank's device."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {key: _on_cpu(item) for key, item in value.items()}
    return value


def barrier(env: Dist) -> None:
    if env.enabled:
        dist.barrier()


def shutdown(env: Dist) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()


def check_in_sync(module: torch.nn.Module, env: Dist, device: torch.device) -> None:
    """Raise if the replicas' weights differ (they must: gradients are averaged every step)."""
    if not env.enabled:
        return
    checksum = torch.stack([p.detach().double().sum() for p in module.parameters()]).to(device)
    reference = checksum.clone()
    dist.broadcast(reference, src=0)
    if not torch.equal(checksum, reference):
        raise RuntimeError(f"rank {env.rank}: weights differ from rank 0; the replicas diverged")
