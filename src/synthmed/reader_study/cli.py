"""``synthmed reader-study ...``: create a study, add readers, serve it, analyse the answers.

Heavy imports (numpy, FastAPI, scipy, matplotlib) happen inside the commands, as in
``synthmed.cli``, so that ``--help`` stays fast.
"""

from __future__ import annotations

import shlex
import urllib.parse
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from synthmed.console import console
from synthmed.errors import ReaderStudyError

reader_study_app = typer.Typer(help="Reader study: radiologists label images as real or synthetic (paper S.8).",
                               no_args_is_help=True)
BASE_URL = "http://127.0.0.1:8000"
BaseUrl = Annotated[str, typer.Option(help="the address readers reach the server at (for the printed links)")]


def check_base_url(url: str) -> None:
    """Refuse a --base-url that would print a broken link: the admin link is shown only once."""
    if not _is_link_base(url):
        raise ReaderStudyError(f"--base-url {url!r}: not an http(s) address with a host and no spaces, "
                               f"e.g. {BASE_URL}")


def _is_link_base(url: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number from 0 to 65535)
    except ValueError:
        return False
    return (parts.scheme in ("http", "https") and bool(parts.hostname) and not (parts.query or parts.fragment)
            and not any(c.isspace() for c in url))


@reader_study_app.command("create")
def create_command(
    real: Annotated[Path, typer.Option(help="the real store (synthmed data prepare)")],
    synthetic: Annotated[Path, typer.Option(help="the synthetic store (RUN/synthetic/store)")],
    resolution: Annotated[int, typer.Option("--resolution", "-r", help="image size in pixels; both stores need it")],
    out: Annotated[Path, typer.Option("--out", "-o", help="study directory to create")],
    n_real: Annotated[int, typer.Option(help="real images to show")] = 50,
    n_synthetic: Annotated[int, typer.Option(help="synthetic images to show")] = 50,
    fold: Annotated[str, typer.Option(help="fold to draw from: train, val or test")] = "test",
    seed: Annotated[int, typer.Option(help="seed of the draw and of the readers' orders")] = 0,
    base_url: BaseUrl = BASE_URL,
) -> None:
    """Draw real and synthetic images (stratified by label combination) into a new study."""
    from synthmed.reader_study.create import create_study

    check_base_url(base_url)
    _, admin_token = create_study(real, synthetic, out, resolution=resolution, n_real=n_real,
                                  n_synthetic=n_synthetic, fold=fold, seed=seed, log=console.print)
    console.print(f"admin page (keep it private; shown only now): {base_url.rstrip('/')}/admin/{admin_token}/",
                  highlight=False, soft_wrap=True)
    study = shlex.quote(str(out))  # a command to paste into a shell, whatever the folder's name
    console.print(f"add readers with `synthmed reader-study add-reader {study} NAME`, then "
                  f"`synthmed reader-study serve {study}`", highlight=False, soft_wrap=True)


@reader_study_app.command("add-reader")
def add_reader_command(
    study: Annotated[Path, typer.Argument(help="the study directory")],
    name: Annotated[str, typer.Argument(help="a name for the reader, e.g. R1 (shown to the admin only)")],
    base_url: BaseUrl = BASE_URL,
) -> None:
    """Register a reader and print their private link (shown once: only its hash is stored)."""
    from synthmed.reader_study import db
    from synthmed.reader_study.app import reader_link

    check_base_url(base_url)
    conn = db.open_study(study)
    try:
        token = db.add_reader(conn, name)
    finally:
        conn.close()
    console.print(f"{name.strip()}: {reader_link(base_url, token)}", highlight=False, soft_wrap=True)


@reader_study_app.command("serve")
def serve_command(
    study: Annotated[Path, typer.Argument(help="the study directory")],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
) -> None:
    """Serve the study to its readers (stop with Ctrl-C; answers are saved as they come)."""
    from synthmed.reader_study.app import serve

    serve(study, host=host, port=port)


@reader_study_app.command("analyze")
def analyze_command(
    study: Annotated[Path, typer.Argument(help="the study directory")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="results directory (default STUDY)")] = None,
    include_incomplete: Annotated[bool, typer.Option(help="also count readers who have not finished")] = False,
) -> None:
    """TR, FR, TS, FS and accuracy per reader, their mean and spread, and the Wilcoxon test against 0.5."""
    from synthmed.evaluation.stats import SPREAD
    from synthmed.reader_study.analysis import analyze_study, confusion_table

    result = analyze_study(study, out, include_incomplete=include_incomplete)
    summary = result["summary"]
    table = Table(title=f"reader study at {result['study']['resolution']} px: {summary['n_readers']} reader(s)")
    header, *rows = confusion_table(summary)
    for column in header:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    accuracies = "  ".join(f"{a:.2f}" for a in summary["accuracy"]["per_reader"])
    console.print(f"accuracies: {accuracies}")
    console.print(f"accuracy {summary['accuracy']['mean']:.3f} ± {summary['accuracy']['std']:.3f} ({SPREAD})")
    for test in summary["wilcoxon"].values():
        if test["p_value"] is None:
            console.print(f"Wilcoxon signed-rank: not computed ({test['reason']})")
            break
        console.print(f"Wilcoxon signed-rank against 0.5, one-sided {test['alternative']}: p = {test['p_value']:.4g}; "
                      f"{test['hypothesis']}")
    console.print(f"results: {Path(out or study) / 'reader_study.json'}")
