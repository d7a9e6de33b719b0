"""Run the benchmarks in order, write each one's JSON, print a summary table.

`python -m benchmarks.run [--quick] [names...]`: all benchmarks when no name is given.
`--quick` scales sizes down (the whole run takes about four minutes); the full run takes
over an hour, most of it the learning and memory benchmarks. A benchmark that fails is
reported and the others still run; the exit status is then 1. Afterwards the README's
performance table and `benchmarks/REPORT.md` (with its plots) are rendered again from
every stored result.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from types import ModuleType

from rich.console import Console
from rich.table import Table

from benchmarks import (
    decision_latency,
    embedded_broker,
    embedded_broker_soak,
    feature_serving,
    freshness,
    ingest_pipeline,
    ingest_store,
    learning_quality,
    memory_per_customer,
    models_cost,
    simulator_scale,
)
from benchmarks.common import Result, format_figure, source_digest
from benchmarks.feature_serving import PeerNotInstalled
from benchmarks.readme import README, update_readme
from benchmarks.report import BENCH_EXTRA_HINT, write_report

#: In the order they run: the store alone, the whole stream, decisions, memory, models,
#: the peers, then the simulator and the embedded broker themselves (the soak last: it runs
#: 30 minutes, one with --quick).
BENCHMARKS: dict[str, ModuleType] = {
    module.NAME: module
    for module in (
        ingest_store,
        ingest_pipeline,
        freshness,
        decision_latency,
        memory_per_customer,
        models_cost,
        learning_quality,
        feature_serving,
        simulator_scale,
        embedded_broker,
        embedded_broker_soak,
    )
}
CHANGED_SOURCES = (
    "the engine's sources changed while this benchmark ran (a shared work tree?): its "
    "figures may mix two versions of the code; run it again"
)
#: Columns of the summary when the output is not a terminal (rich would cut it at 80).
SUMMARY_WIDTH = 160


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes: minutes, not tens")
    parser.add_argument(
        "names", nargs="*", metavar="name", help=f"default: all of {', '.join(BENCHMARKS)}"
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)
    console = Console(width=None if sys.stdout.isatty() else SUMMARY_WIDTH)
    rows: list[tuple[str, Result | None, float]] = []
    skipped: set[str] = set()
    for name in names:
        run: Callable[[bool], Result] = BENCHMARKS[name].run
        started, sources = time.perf_counter(), source_digest()
        try:
            result = run(args.quick)
        except PeerNotInstalled as missing:  # a peer comparison without its peer: skipped
            console.print(f"[yellow]{name} skipped: {missing}[/yellow]")
            rows.append((name, None, time.perf_counter() - started))
            skipped.add(name)
            continue
        except Exception:  # one broken benchmark must not hide the others' figures
            console.print(f"[red]{name} failed[/red]\n{traceback.format_exc()}")
            rows.append((name, None, time.perf_counter() - started))
            continue
        if source_digest() != sources:
            result.notes.append(CHANGED_SOURCES)
            console.print(f"[red]{name}: {CHANGED_SOURCES}[/red]")
        result.print()
        print(f"  wrote {result.write()}")
        rows.append((name, result, time.perf_counter() - started))
    console.print(summary_table(rows, quick=args.quick))
    if update_readme():
        print(f"  updated the performance table in {README}")
    report = write_report()
    plots = BENCH_EXTRA_HINT if report.plots is None else f"{len(report.plots)} plots"
    print(f"  wrote {report.report} ({plots})")
    return 0 if all(result is not None or name in skipped for name, result, _ in rows) else 1


def summary_table(rows: list[tuple[str, Result | None, float]], *, quick: bool) -> Table:
    """One line per benchmark: subject and baseline medians, their ratio, the targets."""
    table = Table(title=f"benchmarks{' (quick)' if quick else ''}: medians of repeats")
    for column in ("benchmark", "subject", "median", "baseline", "median", "ratio", "target"):
        table.add_column(column)
    table.add_column("time", justify="right")
    for name, result, seconds in rows:
        if result is None:
            table.add_row(name, "[red]failed[/red]", *[""] * 5, f"{seconds:.0f} s")
            continue
        verdicts = [
            f"{target.describe().split(' ', 1)[1]}: "
            + ("met" if target.met(result.figures[target.figure].median) else "[red]NOT met[/red]")
            for target in result.targets
        ]
        table.add_row(
            name,
            result.subject,
            format_figure(result.figures[result.subject].median),
            result.baseline,
            format_figure(result.figures[result.baseline].median),
            f"{result.ratio:.3f}",
            "; ".join(verdicts) or "—",
            f"{seconds:.0f} s",
        )
    return table


if __name__ == "__main__":
    raise SystemExit(main())
