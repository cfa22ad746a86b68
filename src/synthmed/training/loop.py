"""The training loop of every generator: one function, ``train``, readable top to bottom.

What differs between models (networks, losses, prog-GAN's growth) lives in their training
method (``methods.py``: ``gan.py``, ``diffusion.py``); this loop feeds it real batches and
keeps the schedule, the EMA sampler, FID stopping, logs and checkpoints.

Progress is counted in real images seen. Every few images the loop logs, writes a sample
grid, checkpoints, and (at ``min_images`` and every ``fid_every`` after it: ``fid_due``)
evaluates FID against the training fold; it stops after ``patience`` evaluations without
improvement or at ``max_images`` and keeps the best-FID EMA generator (with ``fid_every = 0``
there are no checks, and it keeps the final one). A checkpoint holds
everything (networks, EMA, optimisers, images seen, FID history, the data order and every
random generator), so a killed run resumed with ``train(resume=True)`` continues exactly as
if it had never stopped. The files of a run directory are named in ``run_dir.py``.
"""

from __future__ import annotations

import csv
import math
import os
import shlex
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from synthmed import __version__
from synthmed._io import (
    read_json,
    write_json_atomic,
    write_text_atomic,
    write_with_atomic,
)
from synthmed.config import load_mapping
from synthmed.data.settings import BenchmarkSetting
from synthmed.device import precision_name, resolve_bf16, resolve_device, usable_device
from synthmed.errors import DataError
from synthmed.metrics.extractors import FeatureExtractor, make_extractor
from synthmed.metrics.fid import RunningStats, frechet
from synthmed.output_dir import claim_output_dir
from synthmed.progress import progress_bar
from synthmed.training import distributed
from synthmed.training.config import (
    ConfigError,
    TrainConfig,
    config_from_dict,
    validate_resolution,
)
from synthmed.training.methods import TrainingMethod, build_method, update_ema
from synthmed.training.run_dir import RunDir, load_torch_file
from synthmed.training.samples import from_uint8, sample_grid, to_uint8


def log_columns(method: TrainingMethod) -> list[str]:
    return ["images_seen", "step", "resolution", "alpha", *method.loss_names, "images_per_s", "fid"]


@dataclass
class RunState:
    """Everything besides network and optimiser weights that a resumed run needs."""

    images_seen: int = 0
    step: int = 0
    epoch: int = 0
    cursor: int = 0
    order: torch.Tensor | None = None  # permutation of the training rows for this epoch
    fid_history: list[tuple[int, float]] = field(default_factory=list)
    best_fid: float = math.inf
    best_images: int = 0
    evaluations_without_improvement: int = 0
    train_seconds: float = 0.0  # time spent in training steps (not FID, grids or checkpoints)
    bf16: bool | None = None  # the config's ``bf16`` as resolved where the steps so far ran (auto: True or False)


def _next_indices(state: RunState, n_rows: int, count: int, data_gen: torch.Generator) -> torch.Tensor:
    """The next ``count`` training rows in the seeded epoch order (a new permutation per epoch)."""
    taken = []
    while count > 0:
        if state.order is None or state.cursor >= n_rows:
            if state.order is not None:
                state.epoch += 1
            state.order = torch.randperm(n_rows, generator=data_gen)
            state.cursor = 0
        chunk = state.order[state.cursor : state.cursor + count]
        state.cursor += len(chunk)
        count -= len(chunk)
        taken.append(chunk)
    return torch.cat(taken)


def fid_due(before: int, now: int, config: TrainConfig) -> bool:
    """Whether the step from ``before`` to ``now`` images ends on the FID grid: at ``min_images``,
    then every ``fid_every`` images after it (the paper's 7.0M, 7.4M, ... rather than 7.2M, 7.6M);
    never when ``fid_every`` is 0."""
    low, every = config.min_images, config.fid_every
    return every > 0 and now >= low and (before < low or (now - low) // every > (before - low) // every)


def _real_at(images: torch.Tensor, resolution: int, alpha: float) -> torch.Tensor:
    """Reals at the growth resolution; during a fade-in blended with their 2x coarser version (ProGAN)."""
    if images.shape[-1] != resolution:
        images = F.avg_pool2d(images, images.shape[-1] // resolution)
    if alpha < 1:
        coarse = F.interpolate(F.avg_pool2d(images, 2), scale_factor=2, mode="nearest")
        images = torch.lerp(coarse, images, alpha)
    return images


def _save(obj: Any, target: Path) -> None:
    write_with_atomic(target, lambda tmp: torch.save(obj, tmp), suffix=".pt")


def start_run(config: TrainConfig, setting_dir: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Create the run directory for a new run (refuses a directory that holds another run).

    Everything is checked before the directory is made, so a refused run leaves nothing behind."""
    setting = BenchmarkSetting(setting_dir)
    validate_resolution(setting.resolution, config)
    config = config.for_resolution(setting.resolution)
    channels = int(setting.store.manifest["channels"])
    check_hardware(config, channels)
    run = RunDir(out)
    claim_output_dir(run.path, run.info.name, "a run",
                     if_taken=f"continue it with `synthmed train --resume {shlex.quote(str(run.path))}`",
                     error=ConfigError, staged=False)
    run.path.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run.config, yaml.safe_dump(config.to_dict(), sort_keys=False))
    write_json_atomic(run.info, {  # last: run.json marks a run that can be trained
        "setting": str(Path(setting_dir).resolve()),
        "setting_name": f"{setting.meta['dimension']}/{setting.meta['name']}",
        "store_content_hash": setting.meta["store_content_hash"],
        "resolution": setting.resolution,
        "label_names": setting.label_names,
        "image_channels": channels,
        "train_rows": int(len(setting.rows("train"))),
        "model": config.model,
        "config_digest": config.digest(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "synthmed_version": __version__,
        "torch_version": torch.__version__,
    })
    return run.path


def check_hardware(config: TrainConfig, channels: int) -> None:
    """The device and FID feature extractor of ``config`` can be used on this machine.

    Only the machine can tell (a GPU, a weights file), so this runs when a run starts, not when a
    config is read (``generate`` reads a GPU run's config on a laptop)."""
    usable_device(config.device, f"device = {config.device!r}")  # fails here, not after the run folder is made
    if config.fid_every:
        make_extractor(config.fid_extractor, channels=channels)  # an unknown name or missing weights file


def load_run_config(run: RunDir) -> TrainConfig:
    """The run's config.yaml, read and checked as a ``--config`` file is: it may have been edited by hand. An empty
    one is refused rather than read as the defaults: a run's config is written whole."""
    values, where, _ = load_mapping(run.config, "train", presets={})
    if not values:
        raise ConfigError("is empty: a run's config holds its whole training config, as `synthmed train` wrote it",
                          file=where)
    return config_from_dict(values, where)


def train(run_dir: str | os.PathLike, progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or continue) the run in ``run_dir`` until FID stops improving or ``max_images``."""
    run = RunDir.existing(run_dir)
    if run.summary.exists():
        log(f"{run.path} is complete; nothing to do")
        return read_json(run.summary)
    config = load_run_config(run)
    info = run.read_info()
    validate_resolution(info["resolution"], config)  # a config.yaml edited since the run started
    env = distributed.init_from_env("cuda" if torch.cuda.is_available() and config.device != "cpu" else "cpu")
    device = resolve_device(config.device, env.local_rank)
    if config.threads:
        torch.set_num_threads(config.threads)
    say = log if env.is_main else (lambda message: None)
    bf16 = resolve_bf16(config.bf16, device)
    if config.bf16 == "auto":
        say(f"bf16 auto: autocast in {precision_name(bf16)} on {device}")

    # ---- data: the setting's training fold, in memory as uint8 --------------------------------------
    setting = BenchmarkSetting(info["setting"])
    if setting.meta["store_content_hash"] != info["store_content_hash"] or setting.label_names != info["label_names"]:
        raise ConfigError(f"the setting {info['setting']} changed since the run started (store or labels)")
    reals = torch.from_numpy(np.ascontiguousarray(setting.images("train"))).to(device)
    labels = torch.from_numpy(setting.labels("train").astype(np.float32)).to(device)
    resolution, label_dim, n_rows = info["resolution"], labels.shape[1], reals.shape[0]

    # ---- networks, EMA sampler, optimisers --------------------------------------------------------
    torch.manual_seed(config.seed)  # weight initialisation (the same on every rank)
    method = build_method(config, resolution, label_dim, reals.shape[1], device)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    data_gen = torch.Generator().manual_seed(config.seed)  # data order: shared by all ranks
    noise_gen = torch.Generator(device=device).manual_seed(config.seed * 1000 + 1 + env.rank)

    state = RunState()
    if run.checkpoint.exists():
        checkpoint = load_torch_file(run.checkpoint, device)
        try:
            for name, part in {**method.networks(), **method.optimizers()}.items():
                part.load_state_dict(checkpoint[name])
        except (KeyError, RuntimeError, ValueError) as error:  # missing part, other shapes, other optimiser groups
            raise DataError(f"does not fit the networks of {run.config.name} ({type(error).__name__}: "
                            f"{str(error).splitlines()[0]}): the config was edited in a way that changes them; "
                            "put it back, or start a new run", file=run.checkpoint) from None
        data_gen.set_state(checkpoint["data_gen"])
        noise_gen.set_state(checkpoint["noise_gen"][env.rank])
        state = checkpoint["state"]
        say(f"resuming {run.path} at {state.images_seen:,} images")
        if state.bf16 is not None and state.bf16 != bf16:
            say(f"warning: the run trained in {precision_name(state.bf16)} so far and continues in "
                f"{precision_name(bf16)} (bf16 = {config.bf16!r} on {device}): it will not match a run that never "
                "stopped")
    elif hasattr(method, "prepare"):  # a new run: what the method fits on the whole training fold first
        if env.is_main and (note := method.prepare(reals, labels)):
            say(note)
        distributed.share_from_main(method.networks(), env, device)  # rank 0's fit on every rank
    state.bf16 = bf16
    if env.is_main:
        _truncate_log(run.log, state.images_seen)
    writer = _tensorboard(run.tb, state.images_seen) if env.is_main else None
    columns = log_columns(method)

    # no checks, no feature extractor: its real statistics alone take seconds
    extractor = None
    if config.fid_every:
        extractor = make_extractor(config.fid_extractor, channels=reals.shape[1], device=device)
    real_stats = _real_stats(run, extractor, reals, config) if env.is_main and extractor else None
    grid_labels = _grid_labels(labels)

    def checkpoint_now() -> None:
        noise_states = [noise_gen.get_state().cpu()]
        if env.enabled:  # every rank draws its own noise: keep all their states
            gathered: list = [None] * env.world_size
            torch.distributed.all_gather_object(gathered, noise_states[0])
            noise_states = gathered
        if env.is_main:
            parts = {name: part.state_dict() for name, part in {**method.networks(), **method.optimizers()}.items()}
            _save({**parts, "data_gen": data_gen.get_state(), "noise_gen": noise_states, "state": state},
                  run.checkpoint)

    def crossed(every: int, before: int) -> bool:
        return state.images_seen // every > before // every

    # ---- the loop ---------------------------------------------------------------------------------
    stop_reason = "max_images"
    tick_time, tick_images = time.perf_counter(), state.images_seen
    with progress_bar(config.max_images, f"{config.model} {resolution}px", progress and env.is_main,
                      completed=state.images_seen) as bar:
        while state.images_seen < config.max_images:
            step_started = time.perf_counter()
            res, alpha, batch = method.schedule(state.images_seen)
            index = _next_indices(state, n_rows, batch, data_gen)[env.rank :: env.world_size]
            x_real = _real_at(from_uint8(reals[index]), res, alpha).contiguous(memory_format=memory_format)
            y = labels[index]

            losses = method.step(x_real, y, noise_gen, env)
            update_ema(method.sampler, method.model, config, state.step)

            before = state.images_seen
            state.images_seen += batch
            state.step += 1
            method.after_step(before, state.images_seen)
            state.train_seconds += time.perf_counter() - step_started
            bar.advance(batch)

            fid = math.nan
            if fid_due(before, state.images_seen, config):
                fid = _evaluate_fid(method.sampler, extractor, real_stats, labels, config, device) if env.is_main else 0.0
                fid = distributed.broadcast_float(fid, env, device)
                state.fid_history.append((state.images_seen, fid))
                if fid < state.best_fid:
                    state.best_fid, state.best_images, state.evaluations_without_improvement = fid, state.images_seen, 0
                    if env.is_main:
                        _save(_generator_snapshot(method, info, config, state), run.best)
                else:
                    state.evaluations_without_improvement += 1
                say(f"{state.images_seen:,} images: {extractor.name} FD {fid:.2f} (best {state.best_fid:.2f} "
                    f"at {state.best_images:,})")
            if env.is_main and (crossed(config.log_every, before) or not math.isnan(fid)):
                now = time.perf_counter()
                rate = (state.images_seen - tick_images) / max(now - tick_time, 1e-9)
                tick_time, tick_images = now, state.images_seen
                row = [state.images_seen, state.step, res, round(alpha, 4), *(v.item() for v in losses.values()),
                       round(rate, 1), "" if math.isnan(fid) else round(fid, 4)]
                _append_log(run.log, columns, row)
                for name, value in zip(columns[3:], row[3:]):
                    if value != "":
                        writer.add_scalar(f"train/{name}", value, state.images_seen)
            if env.is_main and config.snapshot_every and crossed(config.snapshot_every, before):
                _save(_generator_snapshot(method, info, config, state),
                      run.snapshot(state.images_seen))
            if env.is_main and crossed(config.sample_every, before):
                grid = sample_grid(method.sampler, grid_labels, config.seed + 31)
                write_with_atomic(run.sample_grid(state.images_seen),
                                  lambda tmp: grid.save(tmp, format="PNG"), suffix=".png")
                writer.add_image("samples", np.asarray(grid)[None], state.images_seen)
            if state.evaluations_without_improvement >= config.patience:
                stop_reason = f"no FID improvement in {config.patience} evaluations"
            if crossed(config.checkpoint_every, before) or stop_reason != "max_images":
                checkpoint_now()
            if stop_reason != "max_images":
                break
    checkpoint_now()
    distributed.check_in_sync(method.model, env, device)
    summary = _finish(run, method, info, config, state, stop_reason, extractor) if env.is_main else {}
    if writer is not None:
        writer.close()
    distributed.barrier(env)  # rank 0 has written the summary
    say(f"done ({stop_reason}): {state.images_seen:,} images, "
        + (f"best {extractor.name} FD {state.best_fid:.2f}" if extractor else "no FID checks (fid_every = 0)"))
    distributed.shutdown(env)
    return summary or read_json(run.summary)


# ---- helpers of the loop ----------------------------------------------------------------------------


def _tensorboard(folder: Path, images_seen: int):
    from torch.utils.tensorboard import SummaryWriter

    # purge_step drops events a killed run logged after its last checkpoint
    return SummaryWriter(str(folder), purge_step=images_seen if images_seen else None)


def _append_log(path: Path, columns: list[str], row: list) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(columns)
        writer.writerow(row)


def _truncate_log(path: Path, images_seen: int) -> None:
    """Drop rows a killed run wrote after its last checkpoint, so a resumed log has no duplicates."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    kept = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= images_seen]
    if len(kept) != len(rows):
        write_text_atomic(path, "".join(",".join(r) + "\n" for r in kept))


def _fid_rows(n_rows: int, config: TrainConfig) -> torch.Tensor:
    """Which training rows FID compares with: ``fid_samples`` of them, cycling through a smaller set."""
    order = torch.randperm(n_rows, generator=torch.Generator().manual_seed(config.seed + 17))
    return order[torch.arange(config.fid_samples) % n_rows]


def _real_stats(run: RunDir, extractor, reals: torch.Tensor, config: TrainConfig) -> RunningStats:
    """Feature statistics of the real training rows, computed once per run and cached."""
    cache = run.real_stats(extractor.name)
    if cache.exists():
        return RunningStats.load(cache)
    rows = _fid_rows(reals.shape[0], config)
    unique, inverse = torch.unique(rows, return_inverse=True)
    features = extractor(reals[unique.to(reals.device)].cpu())
    stats = RunningStats(features.shape[1])
    stats.update(features[inverse])
    stats.save(cache)
    return stats


@torch.no_grad()
def _evaluate_fid(sampler: nn.Module, extractor, real_stats: RunningStats, labels: torch.Tensor,
                  config: TrainConfig, device: torch.device) -> float:
    """FD between EMA fakes and the real rows, the fakes made from the same label vectors."""
    rows = _fid_rows(labels.shape[0], config)
    noise = torch.Generator(device=device).manual_seed(config.seed + 29)  # the same noise at every evaluation
    features = []
    for start in range(0, len(rows), 250):
        y = labels[rows[start : start + 250].to(labels.device)]
        features.append(extractor(to_uint8(sampler.sample(y, noise)).cpu()))
    return frechet(torch.cat(features), real_stats)


def _grid_labels(labels: torch.Tensor) -> torch.Tensor:
    """Label vectors of the sample grids: 8 samples of each of up to 12 frequent combinations."""
    combos, counts = torch.unique(labels.cpu(), dim=0, return_counts=True)
    combos = combos[torch.argsort(counts, descending=True, stable=True)][:12]
    return combos.repeat_interleave(8, dim=0).to(labels.device)


def _generator_snapshot(method: TrainingMethod, info: dict, config: TrainConfig, state: RunState) -> dict[str, Any]:
    return {"state_dict": method.sampler.state_dict(), "config": config.to_dict(), "resolution": info["resolution"],
            "label_names": info["label_names"], "image_channels": info["image_channels"],
            "images_seen": state.images_seen, "train_seconds": state.train_seconds, "fid": state.best_fid,
            **method.snapshot_extras()}


def _finish(run: RunDir, method: TrainingMethod, info, config, state: RunState, reason: str,
            extractor: FeatureExtractor | None) -> dict[str, Any]:
    if run.best.exists():
        snapshot = load_torch_file(run.best)
    else:  # no FID evaluation happened (fid_every = 0, or a run resumed past min_images from an older synthmed)
        snapshot = _generator_snapshot(method, info, config, state)
    _save(snapshot, run.generator)
    summary = {
        "status": "complete",
        "stop_reason": reason,
        "images_seen": state.images_seen,
        "steps": state.step,
        "train_seconds": round(state.train_seconds, 1),
        "bf16": state.bf16,
        "best_fid": None if math.isinf(state.best_fid) else state.best_fid,
        "best_images": state.best_images if run.best.exists() else state.images_seen,
        "fid_extractor": extractor.name if extractor else None,
        "fid_standard": bool(extractor and extractor.standard_fid),  # the FID Inception at 299 px: as published FIDs
        "fid_images": config.fid_samples if extractor else 0,  # generated images per check, against as many real rows
        "fid_history": [{"images_seen": i, "fid": f} for i, f in state.fid_history],
        "generator": run.generator.name,
    }
    write_json_atomic(run.summary, summary)
    return summary
