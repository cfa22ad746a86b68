"""Where jobs run: in this process, in K local worker processes, or on Slurm via submitit.

Every executor runs the same function, ``run_job``, on jobs whose inputs are done, until
nothing more can run. A failed job is recorded (``failed.json`` with the traceback) and
the jobs that need it wait for the next run; the others go on.
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import multiprocessing
import os
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from synthmed.benchmark.jobs import Job, job_dir, job_state, mark_finished, mark_running
from synthmed.benchmark.stages import STAGES

Log = Callable[[str], None]


def run_job(job: Job, root: str | os.PathLike, runtime: dict[str, Any] | None = None) -> str:
    """Run one job unless it is done; returns its final state ("done" or "failed")."""
    runtime = dict(runtime or {})
    if runtime.pop("torch_distributed", False):  # a multi-task Slurm job: one rank per task, as torchrun would
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export()
    folder = job_dir(root, job.id)
    if job_state(root, job.id) == "done":
        return "done"
    main_rank = int(os.environ.get("RANK", "0")) == 0
    if runtime.get("threads"):
        import torch

        torch.set_num_threads(int(runtime["threads"]))
    started = time.time()
    if main_rank:
        mark_running(folder)
    inputs = {role: job_dir(root, dep) for role, dep in job.inputs.items()}
    log = _job_logger(folder) if main_rank else (lambda message: None)
    try:
        with _warnings_into(log):
            outputs = STAGES[job.stage](job, folder, inputs, runtime, log)
    except Exception as error:  # recorded for `benchmark status`; dependants wait for a rerun
        if main_rank:
            log(traceback.format_exc())
            mark_finished(folder, started, error=f"{type(error).__name__}: {error}")
        return "failed"
    if main_rank:
        mark_finished(folder, started, outputs)
    return "done"


@contextlib.contextmanager
def _warnings_into(log: Log) -> Iterator[None]:
    """A job's warnings go to its log as they come, beside the lines they explain, not to the console of
    the whole run."""
    with warnings.catch_warnings():  # restores showwarning on leaving
        warnings.showwarning = lambda message, *_, **__: log(f"warning: {message}")
        yield


def _job_logger(folder: Path) -> Log:
    def log(message: str) -> None:
        with open(folder / "log.txt", "a") as handle:
            handle.write(f"{time.strftime('%H:%M:%S')} {message}\n")
    return log


def initial_states(jobs: list[Job], root: Path) -> dict[str, str]:
    """States at the start of a run: a job that failed last time is tried again."""
    states = {j.id: job_state(root, j.id) for j in jobs}
    return {k: "pending" if v == "failed" else v for k, v in states.items()}


def _can_run(job: Job, states: dict[str, str]) -> bool:
    return states[job.id] == "pending" and all(states[d] == "done" for d in job.inputs.values())


def _ready(jobs: list[Job], states: dict[str, str], started: set[str]) -> list[Job]:
    return [j for j in jobs if j.id not in started and _can_run(j, states)]


def _announce(log: Log, job: Job, state: str, states: dict[str, str]) -> None:
    done = sum(s == "done" for s in states.values())
    log(f"[{done}/{len(states)}] {job.id}: {state}")


def run_local(jobs: list[Job], root: Path, workers: int = 1, log: Log = print) -> dict[str, str]:
    """Run every runnable job here; ``workers`` > 1 runs that many jobs at once in worker processes,
    each with one GPU when there are GPUs (shared round-robin when fewer) and an equal share of
    the CPU cores."""
    states = initial_states(jobs, root)
    if workers <= 1:
        for job in jobs:  # in dependency order
            if _can_run(job, states):
                log(f"running {job.id}")
                states[job.id] = run_job(job, root)
                _announce(log, job, states[job.id], states)
        return states
    context = multiprocessing.get_context("spawn")
    devices = context.Queue()
    gpus = _gpu_ids()
    for i in range(workers):  # more workers than GPUs share them round-robin
        devices.put(gpus[i % len(gpus)] if gpus else None)
    threads = max(1, (os.cpu_count() or 1) // workers)
    with futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                     initargs=(devices,)) as pool:
        running: dict[futures.Future, Job] = {}
        started: set[str] = set()
        while True:
            for job in _ready(jobs, states, started)[: workers - len(running)]:
                log(f"running {job.id}")
                started.add(job.id)
                running[pool.submit(run_job, job, root, {"threads": threads})] = job
            if not running:
                return states
            finished, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                states[job.id] = future.result()
                _announce(log, job, states[job.id], states)


def _gpu_ids() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d for d in visible.split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def _init_worker(devices) -> None:
    """Runs first in each worker process, before torch touches CUDA: claim one GPU."""
    device = devices.get()
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device


def run_submitit(jobs: list[Job], root: Path, slurm: dict[str, Any], cluster: str = "slurm",
                 log: Log = print) -> dict[str, str]:
    """Run in waves: each wave submits every runnable job as one job array and waits for it.

    ``cluster="local"`` uses submitit's local executor (the same functions, as subprocesses
    here): how the Slurm path is tested. Training jobs with ``gpus_per_task`` > 1 run one
    task per GPU and join one process group, as under torchrun.
    """
    import submitit

    states = initial_states(jobs, root)
    executor = submitit.AutoExecutor(folder=root / "submitit" / "%j", cluster=cluster)
    gpus = int(slurm.get("gpus_per_task", 1))
    base = {"timeout_min": int(slurm.get("timeout_min", 24 * 60)), "cpus_per_task": int(slurm.get("cpus_per_task", 8))}
    if cluster == "slurm":
        base.update({f"slurm_{k}": v for k, v in slurm.items() if k not in ("gpus_per_task", "timeout_min",
                                                                             "cpus_per_task")})
    while True:
        wave = _ready(jobs, states, set())
        if not wave:
            return states
        submitted = []
        for multi_gpu, group in _split(wave, lambda j: j.stage == "train" and gpus > 1):
            tasks = gpus if multi_gpu else 1
            gpu_args = {"gpus_per_node": tasks} if cluster == "slurm" else {}
            executor.update_parameters(**base, **gpu_args, tasks_per_node=tasks)
            with executor.batch():  # one Slurm job array per group
                handles = [executor.submit(run_job, job, str(root), {"torch_distributed": multi_gpu})
                           for job in group]
            submitted += zip(handles, group)
        log(f"submitted {len(submitted)} job(s): {', '.join(j.id for _, j in submitted)}")
        for handle, job in submitted:
            try:
                result = handle.results()[0]
            except Exception as error:  # the process died (killed, out of memory, time limit)
                log(f"{job.id}: {error}")
                result = job_state(root, job.id)
            states[job.id] = result if result in ("done", "failed") else "failed"
            _announce(log, job, states[job.id], states)


def _split(jobs: Iterable[Job], predicate: Callable[[Job], bool]) -> list[tuple[bool, list[Job]]]:
    groups = {flag: [j for j in jobs if predicate(j) == flag] for flag in (False, True)}
    return [(flag, group) for flag, group in groups.items() if group]
