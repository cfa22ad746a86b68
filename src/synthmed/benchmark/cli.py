"""``synthmed benchmark``, ``synthmed report`` and ``synthmed demo``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from synthmed.console import console

if TYPE_CHECKING:
    from synthmed.benchmark.jobs import Job

benchmark_app = typer.Typer(help="Run a benchmark preset (data x settings x models x seeds) as resumable jobs.",
                            invoke_without_command=True, no_args_is_help=True)


@benchmark_app.callback()
def benchmark_command(
    ctx: typer.Context,
    preset: Annotated[Optional[str], typer.Option(help="br35h-samples(-full), br35h-resolution, chest, "
                                                       "brain, phantom-chest(-cpu), demo or a YAML file")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="benchmark directory")] = None,
    seeds: Annotated[Optional[int], typer.Option(help="seeds per setting (replaces the preset's counts)")] = None,
    root: Annotated[Optional[Path], typer.Option(help="the data source's folder (CheXpert, RSNA, ...)")] = None,
    executor: Annotated[str, typer.Option(help="local, slurm, or submitit-local (the Slurm path, here)")] = "local",
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="local: jobs run at once (one GPU each)")] = 1,
    dry_run: Annotated[bool, typer.Option(help="only show the jobs per dimension and stage, and the training "
                                               "plan")] = False,
) -> None:
    """Run every job of PRESET that is not done yet into OUT; rerun the same command to resume."""
    if ctx.invoked_subcommand is not None:
        return
    from synthmed.benchmark.jobs import expand
    from synthmed.benchmark.presets import load_preset
    from synthmed.benchmark.runner import count_jobs, run_benchmark, training_plan
    from synthmed.errors import ConfigError

    if preset is None or (out is None and not dry_run):
        raise ConfigError("give --preset and --out (or --dry-run)")
    loaded = load_preset(preset, seeds=seeds, root=root)
    if dry_run:
        jobs = expand(loaded)
        _print_counts(loaded.name, count_jobs(jobs))
        _print_plan(loaded.name, training_plan(loaded, jobs), jobs)
        return
    _exit_if_jobs_failed(run_benchmark(loaded, out, executor=executor, workers=jobs, log=console.print)["states"], out)


def _exit_if_jobs_failed(states: dict[str, str], out: Path) -> None:
    """Exit status 1 when a job failed, as ``make -k`` does: every other job has run and the results and report hold
    what finished, but a script or a Slurm chain must not take the sweep for complete."""
    failed = sum(state == "failed" for state in states.values())
    if failed:
        console.print(f"[red]{failed} job(s) failed[/]: `synthmed benchmark status {escape(str(out))}` says why; "
                      "rerun the same command to retry them")
        raise typer.Exit(1)


def _print_counts(name: str, counts: dict[str, dict[str, int]]) -> None:
    stages = sorted({s for c in counts.values() for s in c})
    table = Table(title=f"{name}: jobs per dimension and stage")
    for column in ["dimension", *stages, "total"]:
        table.add_column(column, justify="left" if column == "dimension" else "right")
    for dimension, c in counts.items():
        table.add_row(dimension, *(str(c.get(s, 0)) for s in stages), str(sum(c.values())))
    table.add_row("all", *(str(sum(c.get(s, 0) for c in counts.values())) for s in stages),
                  str(sum(sum(c.values()) for c in counts.values())))
    console.print(table)


def _print_plan(name: str, plan: list[dict[str, Any]], jobs: list[Job]) -> None:
    models = list(plan[0]["seeds"]) if plan else []
    table = Table(title=f"{name}: training runs (seeds) per setting and model; external models: imported sets")
    for column in ["setting", "px", *models, "seeds 1.. stop"]:
        table.add_column(column, justify="left" if column == "setting" else "right")
    for row in plan:
        trained = max(row["seeds"].values(), default=0)
        stop = "at seed 0's step" if row["waiting"] else "by own FID" if trained > 1 else "one run"
        table.add_row(f"{row['dimension']}/{row['setting']}", str(row["resolution"]),
                      *(str(row["seeds"][m]) if row["seeds"][m] else "-" for m in models), stop)
    console.print(table)
    waiting = [j for j in jobs if "first_seed" in j.inputs]
    if waiting:
        console.print(f"shared stopping step (S.3): {len(waiting)} trainings wait for the seed-0 training of their "
                      "setting and model, then train to the step where it kept its generator; e.g.\n"
                      f"  {waiting[0].id}\n  waits for {waiting[0].inputs['first_seed']}", highlight=False)


@benchmark_app.command("status")
def status_command(out: Annotated[Path, typer.Argument(help="a benchmark directory")]) -> None:
    """Jobs done / running / failed / pending, per stage, and the errors of failed jobs."""
    from synthmed.benchmark.runner import benchmark_status

    status = benchmark_status(out)
    table = Table(title=f"{out}")
    table.add_column("stage")
    for state in status["order"]:
        table.add_column(state, justify="right")
    for stage, counts in status["per_stage"].items():
        table.add_row(stage, *(str(counts.get(s, 0)) for s in status["order"]))
    table.add_row("all", *(str(status["total"].get(s, 0)) for s in status["order"]))
    console.print(table)
    for job, error in status["failed"].items():
        console.print(f"[red]failed[/] {escape(f'{job}: {error}')} (log: {out / 'jobs' / job / 'log.txt'})")


def report_command(
    directory: Annotated[Path, typer.Argument(help="a benchmark directory")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="HTML file (default DIR/report.html)")] = None,
) -> None:
    """Write a self-contained HTML report of a benchmark directory."""
    from synthmed.report import build_report

    path = build_report(directory, out)
    console.print(f"report: {path}")


def demo_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="demo directory")] = Path("runs/demo"),
) -> None:
    """The main job: br35h at 32x32, both GANs and the diffusion model, utility, FID, privacy, maps, report."""
    from synthmed.benchmark.demo import run_demo

    _exit_if_jobs_failed(run_demo(out, log=console.print)["states"], out)
