"""The `nba` command: `up`, `demo`, `worker`, `api`, `learner`, `load`, `validate`.

The worker (Faust), the API (uvicorn) and the learner are imported only by the command
that runs them, so each process loads just what it needs.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rich.console import Console
from rich.markup import escape
from rich.progress import DownloadColumn, Progress
from rich.table import Table

from actions.catalog import CatalogError, load_catalog
from engine.core.settings import Settings
from engine.sim.demo import DemoConfig, FellBehind, run_demo
from engine.stream.supervisor import SupervisorError, System, start_system, stop_on_signals

console = Console()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nba", description="nba-engine: next-best actions")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser(
        "up",
        help="run servers (embedded unless configured), workers, the learner and the API; "
        "restart a worker, the learner or the API that exits (with backoff) until Ctrl-C, "
        "or stop all with an error when one keeps failing to start",
    )
    up.add_argument("--api-port", type=int, default=None, help="default: NBA_API_PORT or 8000")
    up.add_argument(
        "--workers",
        type=_worker_count,
        default=1,
        help="Faust workers sharing the partitions (default 1; one per core for freshness)",
    )

    demo = commands.add_parser("demo", help="`up`, then drive a simulated bank through it")
    demo.add_argument("--api-port", type=int, default=0, help="default: any free port")
    demo.add_argument("--customers", type=int, default=3000)
    demo.add_argument("--days", type=int, default=14)
    demo.add_argument("--decisions-per-day", type=int, default=600)
    demo.add_argument("--seed", type=int, default=7)

    commands.add_parser("worker", help="run one Faust worker (needs NBA_REDIS_URL, ...)")
    commands.add_parser("api", help="run the HTTP API (needs NBA_REDIS_URL, ...)")
    commands.add_parser(
        "learner", help="run the churn and segment learner and the base walk (needs NBA_REDIS_URL)"
    )

    load = commands.add_parser(
        "load", help="load a history of events (JSON lines) into the store (needs NBA_REDIS_URL)"
    )
    load.add_argument("events", type=Path, help="one event per line, as POST /v1/events takes")
    load.add_argument(
        "--rejects",
        type=Path,
        default=None,
        help="where invalid lines and late events go, with reasons (default: EVENTS.rejected)",
    )

    validate = commands.add_parser("validate", help="check an action catalog file")
    validate.add_argument("catalog", type=Path, nargs="?", default=None)

    args = parser.parse_args(argv)
    try:
        settings = Settings.from_environment()
    except ValueError as error:  # pydantic's ValidationError included
        console.print(f"[red]invalid configuration[/red]: {escape(str(error))}")
        return 2
    try:
        return _run(args, settings)
    except KeyboardInterrupt:
        console.print("Interrupted.")
        return 130


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "up":
        return _up(settings, args.api_port, args.workers)
    if args.command == "demo":
        return _demo(settings, args)
    if args.command in ("worker", "api", "learner"):
        try:
            if args.command == "learner":
                settings.require_redis()  # the learner needs no broker
            else:
                settings.require_servers()
            settings.require_model_key()
        except ValueError as error:
            console.print(f"[red]nba {args.command}[/red]: {escape(str(error))}")
            return 2
        process = {"worker": _worker, "api": _api, "learner": _learner}[args.command]
        return process(settings)
    if args.command == "load":
        return _load(settings, args.events, args.rejects)
    return _validate(args.catalog or settings.catalog_path)


def _worker(settings: Settings) -> int:
    from engine.stream.worker import run_worker

    run_worker(settings)
    return 0


def _learner(settings: Settings) -> int:
    from engine.stream.learner import run_learner

    run_learner(settings)
    return 0


def _load(settings: Settings, events: Path, rejects: Path | None) -> int:
    """`nba load`: the file's events into the store, with a progress bar and a summary."""
    from engine.stream.bulk_load import load_into

    try:
        redis_url = settings.require_redis()
        size = events.stat().st_size
    except (ValueError, OSError) as error:
        console.print(f"[red]nba load[/red]: {escape(str(error))}")
        return 2
    rejects = rejects or events.with_name(events.name + ".rejected")
    try:
        with Progress(*Progress.get_default_columns(), DownloadColumn(), console=console) as bar:
            task = bar.add_task(f"loading {events.name}", total=size)
            report = asyncio.run(
                load_into(
                    redis_url, settings, events, rejects, lambda read: bar.advance(task, read)
                )
            )
    except (RedisConnectionError, RedisTimeoutError) as error:
        console.print(
            f"[red]nba load[/red]: Redis at {escape(redis_url)} failed: {escape(str(error))}. "
            "Part of the file may be loaded; loading it again is safe (events already "
            "applied are recognised by their ids and skipped)."
        )
        return 1
    table = Table(title=f"{events}", show_header=False)
    table.add_row("lines read", f"{report.lines:,}")
    table.add_row("events applied", f"{report.applied:,}")
    table.add_row("already applied before", f"{report.duplicates:,}")
    table.add_row("identifiers linked", f"{report.linked:,}")
    table.add_row("late events (not applied)", f"{report.late:,}")
    table.add_row("invalid lines", f"{report.rejected:,}")
    console.print(table)
    if report.late or report.rejected:
        console.print(f"[yellow]rejected lines and late events, with reasons: {rejects}[/yellow]")
        return 1
    return 0


def _print_system(system: System) -> None:
    table = Table(title="nba-engine is up", show_header=False)
    for part, where in system.describe():
        table.add_row(part, where)
    console.print(table)


def _worker_count(text: str) -> int:
    """`--workers`: a whole number, at least 1."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"at least one worker is needed, not {count}")
    return count


def _up(settings: Settings, api_port: int | None, workers: int) -> int:
    stop_on_signals()
    try:
        with start_system(settings, api_port=api_port, workers=workers, notify=_notify) as system:
            _print_system(system)
            console.print("Press Ctrl-C to stop.")
            try:
                system.supervise()
            except KeyboardInterrupt:
                console.print("Stopping…")
                return 0
    except SupervisorError as error:
        _print_failure(error)
        return 1


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    """`nba demo`: exit 0 only if every accepted event was applied and every answer learned.

    The children's logs are kept (and their place printed) when a part fell behind.
    """
    stop_on_signals()
    log_dir = Path(tempfile.mkdtemp(prefix="nba-demo-"))
    console.print("Starting the system (embedded servers, worker, API)…")
    try:
        with start_system(
            settings, api_port=args.api_port, log_dir=log_dir, notify=_notify
        ) as system:
            _print_system(system)
            config = DemoConfig(
                customers=args.customers,
                days=args.days,
                decisions_per_day=args.decisions_per_day,
                seed=args.seed,
            )
            try:
                report = system.run_supervised(
                    lambda: run_demo(system.api_url, system.settings, config, console)
                )
            except FellBehind as error:
                console.print(error.report.as_table())
                logs = [
                    str(child.log_path)
                    for child in system.children
                    if child.log_path and child.name.startswith(error.part)
                ]
                console.print(f"[red bold]nba demo failed: {escape(str(error))}.[/red bold]")
                console.print(f"[red]The {error.part}'s log: {escape(', '.join(logs))}[/red]")
                console.print(f"[red]All logs are kept in {escape(str(log_dir))}[/red]")
                return 1
    except SupervisorError as error:
        _print_failure(error)
        console.print(f"[red]All logs are kept in {escape(str(log_dir))}[/red]")
        return 1
    console.print(report.as_table())
    shutil.rmtree(log_dir, ignore_errors=True)
    return 0


def _notify(message: str) -> None:
    """A supervised child's exit or restart, on the console."""
    console.print(f"[yellow]{escape(message)}[/yellow]", soft_wrap=True)


def _print_failure(error: SupervisorError) -> None:
    """Why the system stopped (or never started), in red, then the end of the log of the
    part to blame when it has a log file."""
    console.print(f"[red]{escape(str(error))}[/red]", soft_wrap=True)
    if error.log_tail:
        console.print(escape(error.log_tail), highlight=False, soft_wrap=True)


def _api(settings: Settings) -> int:
    import uvicorn

    from api.app import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
    return 0


def _validate(path: Path) -> int:
    try:
        catalog = load_catalog(path)
    except CatalogError as error:
        console.print(f"[red]invalid catalog[/red]: {error}")
        return 1
    console.print(f"{path}: {len(catalog.actions)} actions, all rules compile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
