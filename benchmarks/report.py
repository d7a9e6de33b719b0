"""Render `benchmarks/REPORT.md` and its PNG plots from `benchmarks/results/*.json`.

The report is generated, never typed: one section per result file saying what the benchmark
measures (its module's docstring), the command that reproduces it, every figure with its
repeats, the targets and whether they are met, the ratio to the baseline measured in the
same run, the notes and the machine it ran on; plots show the repeats as points, so the
noise is visible next to every median. A benchmark this module does not know still gets a
section and a chart of its figures.

Output is deterministic — the same results give the same markdown and the same PNG bytes
(no date, no software version in the PNG metadata) — so re-rendering unchanged results
leaves `git diff` quiet. Plots need matplotlib, from the `bench` extra; without it the
markdown is still written and says how to get the plots.

`benchmarks.run` calls `write_report` after a run; `python -m benchmarks.report` redoes it
from the stored results.
"""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from benchmarks.common import RESULTS_DIR, format_figure

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.ticker import Formatter

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPORT = BENCHMARKS_DIR / "REPORT.md"
PLOTS_DIR = BENCHMARKS_DIR / "report"
BENCH_EXTRA_HINT = (
    "Plots need matplotlib, from the `bench` extra: `pip install -e .[bench]`, then "
    "`python -m benchmarks.report`."
)
#: A result file as `Result.to_dict` writes it.
ResultDoc = Mapping[str, Any]

# -- reading results ------------------------------------------------------------------------


def load_results(results_dir: Path = RESULTS_DIR) -> list[dict[str, Any]]:
    """Every `<name>.json` result in `results_dir`, ordered by file name."""
    return [json.loads(path.read_text()) for path in sorted(results_dir.glob("*.json"))]


def describe_benchmark(name: str, sources_dir: Path = BENCHMARKS_DIR) -> str | None:
    """What benchmark `name` measures: its module's docstring without the `Run:` line.

    Read with `ast`, not imported, so rendering never runs a benchmark module's imports; the
    command is printed apart. None when no `<name>.py` module (or docstring) exists.
    """
    path = sources_dir / f"{name}.py"
    if not path.is_file():
        return None
    docstring = ast.get_docstring(ast.parse(path.read_text()))
    if docstring is None:
        return None
    paragraphs = [part for part in docstring.split("\n\n") if not part.startswith("Run:")]
    return "\n\n".join(paragraphs).strip()


def quantity_of(figure: str) -> str:
    """What a figure without a unit measures, to group it with its kind in charts.

    The first word names the subject (a policy, a stage), so the rest is the quantity:
    `learner_accept_rate` → "accept rate"; a ratio `learner_over_random` → "ratio".
    """
    words = figure.split("_")
    if "over" in words[1:-1]:
        return "ratio"
    return " ".join(words[1:]) or figure


#: Unit words of figure names, by what they print as.
BASE_UNITS = {"us": "µs", "ms": "ms", "s": "s", "bytes": "bytes", "kib": "KiB", "share": "share"}


def unit_of(figure: str) -> str:
    """The unit a figure's name carries, by the `Result` convention; "" when it names none.

    `worker_events_per_s` → "events/s", `http_p99_us` → "µs", `api_cpu_us_per_request` →
    "µs per request", `features_bytes_per_customer` → "bytes per customer",
    `events_per_kafka_message` → "events per kafka message".
    """
    words = figure.split("_")
    if len(words) >= 3 and words[-2:] == ["per", "s"]:
        return f"{words[-3]}/s"
    for index in range(len(words) - 1, -1, -1):
        if words[index] in BASE_UNITS:
            return " ".join([BASE_UNITS[words[index]], *words[index + 1 :]])
    if "per" in words[1:-1]:
        index = words.index("per", 1)
        return " ".join(words[index - 1 :])
    return ""


# -- the markdown ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plot:
    """One PNG of a result and what it shows (its alt text in the report)."""

    path: Path
    caption: str


def render_markdown(
    results: Sequence[ResultDoc],
    plots: Mapping[str, Sequence[Plot]] | None,
    *,
    report_dir: Path = BENCHMARKS_DIR,
    sources_dir: Path = BENCHMARKS_DIR,
) -> str:
    """The whole report: an overview table, then one section per result.

    `plots` maps a result's name to its plots; None means matplotlib is missing, which the
    report says. Image links are relative to `report_dir`, where the markdown is written.
    """
    lines = [
        "# Benchmark report",
        "",
        "Generated by `python -m benchmarks.report` from `benchmarks/results/*.json` (also run "
        "by `python -m benchmarks.run`); do not edit by hand. Figures are medians of repeats; "
        "each benchmark measures a baseline in the same run, on the same machine and under the "
        "same noise, so read the ratios before the absolute numbers.",
        "",
    ]
    if plots is None:
        lines += [f"> {BENCH_EXTRA_HINT}", ""]
    if not results:
        return "\n".join([*lines, "No results yet: run `python -m benchmarks.run --quick`.", ""])
    lines += [*_overview(results), ""]
    for result in results:
        result_plots = None if plots is None else plots.get(result["name"], ())
        lines += _section(result, result_plots, report_dir, sources_dir)
    return "\n".join(lines)


def _overview(results: Sequence[ResultDoc]) -> list[str]:
    """One row per benchmark (linked to its section): subject, baseline, ratio, targets."""
    rows = [
        "| benchmark | subject (median) | baseline, same run (median) | ratio | targets |",
        "|---|---|---|---|---|",
    ]
    for result in results:
        subject, baseline = result["subject"], result["baseline"]
        verdicts = "; ".join(_target_text(target) for target in result.get("targets", []))
        rows.append(
            f"| [{result['name']}](#{result['name']}) | `{subject['figure']}` "
            f"{format_figure(subject['median'])} | `{baseline['figure']}` "
            f"{format_figure(baseline['median'])} | {format_figure(result['ratio'])} | "
            f"{verdicts or '—'} |"
        )
    return rows


def _section(
    result: ResultDoc, plots: Sequence[Plot] | None, report_dir: Path, sources_dir: Path
) -> list[str]:
    """The section of one benchmark, in the order a reader checks a claim."""
    name = result["name"]
    description = describe_benchmark(name, sources_dir) or (
        f"No module `benchmarks/{name}.py` describes this benchmark; its notes below say what "
        "was measured."
    )
    return [
        f"## {name}",
        "",
        description,
        "",
        f"**Reproduce:** `{reproduce_command(result)}` (or `{run_command(result)}`, which "
        "also renders this report again)",
        "",
        f"**Machine:** {_machine_text(result)}",
        "",
        f"**Subject vs baseline:** {_comparison_text(result)}",
        "",
        *_targets_lines(result),
        *_figures_table(result),
        "",
        *_series_lines(result),
        *_notes_lines(result),
        *_plot_lines(plots, report_dir),
        *_parameters_lines(result),
    ]


def reproduce_command(result: ResultDoc) -> str:
    """The command that measures this result again, with `--quick` if it was quick."""
    return f"python -m benchmarks.{result['name']}{_quick(result)}"


def run_command(result: ResultDoc) -> str:
    """The same through `benchmarks.run`, which also updates the README and this report."""
    return f"python -m benchmarks.run{_quick(result)} {result['name']}"


def _quick(result: ResultDoc) -> str:
    return " --quick" if result.get("parameters", {}).get("quick") else ""


def _machine_text(result: ResultDoc) -> str:
    """CPU, cores, memory, OS, Python, load average, revision and time of one result."""
    machine = result["machine"]
    cores = machine.get("cores")
    usable = machine.get("cores_usable")
    parts = [
        machine.get("cpu_model", "unknown CPU"),
        f"{cores} cores" + (f" ({usable} usable)" if usable not in (None, cores) else ""),
    ]
    if machine.get("memory_mib"):
        parts.append(f"{machine['memory_mib'] / 1024:.0f} GiB")
    parts += [machine[key] for key in ("os", "python") if machine.get(key)]
    return (
        f"{', '.join(parts)}; {_load_text(machine)}; {_revision_text(machine)}; "
        f"measured {result['timestamp']}."
    )


def _load_text(machine: Mapping[str, Any]) -> str:
    """The load average, flagged when it exceeds the core count (other work competed)."""
    load = machine.get("load_average")
    if not load:
        return "load average unknown"
    text = "load average " + " / ".join(f"{value:.2f}" for value in load) + " (1, 5, 15 min)"
    if machine.get("cores") and load[0] > machine["cores"]:
        text += ": **busy**, above the core count — other work competed"
    return text


def _revision_text(machine: Mapping[str, Any]) -> str:
    """`git 050f36e (dirty, sources sha256 f6bd97735949…)` or `git revision unknown`."""
    git = machine.get("git") or {}
    if not git.get("revision"):
        return "git revision unknown"
    extras = ["dirty"] if git.get("dirty") else []
    if git.get("source_sha256"):
        extras.append(f"sources sha256 {git['source_sha256'][:12]}…")
    return f"git {git['revision'][:7]}" + (f" ({', '.join(extras)})" if extras else "")


def _comparison_text(result: ResultDoc) -> str:
    """`subject` median against `baseline` median and their ratio."""
    subject, baseline = result["subject"], result["baseline"]
    return (
        f"`{subject['figure']}` {_with_unit(subject['median'], subject['figure'])} against "
        f"`{baseline['figure']}` {_with_unit(baseline['median'], baseline['figure'])}: "
        f"ratio subject / baseline **{format_figure(result['ratio'])}**."
    )


def _with_unit(value: float, figure: str) -> str:
    unit = unit_of(figure)
    return f"{format_figure(value)} {unit}".rstrip()


def _target_text(target: Mapping[str, Any]) -> str:
    """`figure ≥ bound: met` or `figure ≥ bound: **NOT met**`."""
    return f"`{target['figure']}` {_bound(target)}: {'met' if target['met'] else '**NOT met**'}"


def _bound(target: Mapping[str, Any]) -> str:
    if target.get("at_least") is not None:
        return f"≥ {format_figure(target['at_least'])}"
    return f"≤ {format_figure(target['at_most'])}"


def _targets_lines(result: ResultDoc) -> list[str]:
    targets = result.get("targets", [])
    if not targets:
        return ["**Targets:** none set for this benchmark.", ""]
    items = [
        f"- {_target_text(target)} (median {format_figure(_target_median(result, target))})"
        for target in targets
    ]
    return ["**Targets:**", "", *items, ""]


def _target_median(result: ResultDoc, target: Mapping[str, Any]) -> float:
    median = target.get("median")
    return result["figures"][target["figure"]]["median"] if median is None else median


def _figures_table(result: ResultDoc) -> list[str]:
    """Every figure: its role, unit, median and each repeat, in the result's order."""
    roles = {result["subject"]["figure"]: "subject", result["baseline"]["figure"]: "baseline"}
    rows = ["| figure | role | unit | median | repeats |", "|---|---|---|---|---|"]
    for name, figure in result["figures"].items():
        repeats = " · ".join(format_figure(value) for value in figure["repeats"])
        rows.append(
            f"| `{name}` | {roles.get(name, '')} | {unit_of(name) or '—'} | "
            f"{format_figure(figure['median'])} | {repeats} |"
        )
    return rows


def _series_lines(result: ResultDoc) -> list[str]:
    """The last point of every curve of a result's `series`, one row per policy."""
    series = result.get("series")
    if not series:
        return []
    curves = curve_names(series)
    policies = ordered_policies(name for curve in curves for name in series[curve])
    rows = [
        f"**At the end of the series ({format_figure(series['decisions'][-1])} decisions):**",
        "",
        "| policy | " + " | ".join(curve.replace("_", " ") for curve in curves) + " |",
        "|---|" + "---|" * len(curves),
    ]
    for policy in policies:
        cells = [_last_point(series[curve].get(policy)) for curve in curves]
        rows.append(f"| {policy} | " + " | ".join(cells) + " |")
    return [*rows, ""]


def _last_point(values: Sequence[float] | None) -> str:
    return format_figure(values[-1]) if values else "—"


def curve_names(series: Mapping[str, Any]) -> list[str]:
    """The curves of a `series`: every entry but `decisions`, the shared x axis."""
    return [key for key in series if key != "decisions"]


#: The learning benchmark's policies in reading order; others follow alphabetically.
POLICY_ORDER = ("learner", "vw", "static", "random", "oracle")


def ordered_policies(names: Iterable[str]) -> list[str]:
    """Distinct policy names, the known ones first in POLICY_ORDER."""
    unique = set(names)
    known = [name for name in POLICY_ORDER if name in unique]
    return known + sorted(unique - set(POLICY_ORDER))


def _notes_lines(result: ResultDoc) -> list[str]:
    notes = result.get("notes", [])
    return ["**Notes:**", "", *(f"- {note}" for note in notes), ""] if notes else []


def _parameters_lines(result: ResultDoc) -> list[str]:
    """Parameters and key package versions, folded away: needed to reproduce, not to read."""
    rows = [f"| `{key}` | {_cell(value)} |" for key, value in result.get("parameters", {}).items()]
    packages = result["machine"].get("packages") or {}
    rows += [f"| package `{name}` | {_cell(version)} |" for name, version in packages.items()]
    if not rows:
        return []
    return [
        "<details><summary>Parameters and package versions</summary>",
        "",
        "| parameter | value |",
        "|---|---|",
        *rows,
        "",
        "</details>",
        "",
    ]


def _cell(value: Any) -> str:
    """A parameter value as JSON (stable for any type), safe inside a table cell."""
    return json.dumps(value, ensure_ascii=False).replace("|", "\\|")


def _plot_lines(plots: Sequence[Plot] | None, report_dir: Path) -> list[str]:
    """An image link per plot, relative to the report (none without matplotlib)."""
    lines = []
    for plot in plots or ():
        link = Path(os.path.relpath(plot.path, report_dir)).as_posix()
        lines += [f"![{plot.caption}]({link})", ""]
    return lines


# -- the plots ------------------------------------------------------------------------------

#: Fixed style, so output depends neither on a user's matplotlibrc nor on the version's default.
STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.dpi": 100,
}
SUBJECT_COLOR, BASELINE_COLOR, OTHER_COLOR = "#1f77b4", "#ff7f0e", "#b0b0b0"
#: Behind a median's label, so a target mark crossing it does not hide it.
LABEL_BOX = {"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1}
REPEAT_STYLE = {"s": 14, "color": "black", "zorder": 3}
TARGET_COLOR = "#d62728"
POLICY_STYLES: dict[str, dict[str, Any]] = {
    "learner": {"color": "#1f77b4", "linewidth": 2.4},
    "vw": {"color": "#9467bd", "linewidth": 1.6},
    "static": {"color": "#8c564b", "linewidth": 1.6},
    "random": {"color": "#7f7f7f", "linewidth": 1.6},
    "oracle": {"color": "black", "linewidth": 1.4, "linestyle": "--"},
}
CURVE_LABELS = {
    "accept_rate": ("accept rate over the decisions", "accept rate (share of decisions accepted)"),
    "cumulative_regret": (
        "cumulative regret against the oracle",
        "cumulative regret (expected accepts lost)",
    ),
}
MARKERS_STYLE = {"facecolor": "white", "edgecolor": SUBJECT_COLOR, "hatch": "//"}
PERCENTILE = re.compile(r"^(?P<stage>.+)_p(?P<cut>\d+)_us$")


def render_plots(result: ResultDoc, plots_dir: Path) -> list[Plot]:
    """Write every PNG that fits `result` into `plots_dir`; raises ImportError without matplotlib.

    Every result gets its subject-vs-baseline chart and a chart of all its figures; latency
    percentiles (`<stage>_p<N>_us`), memory per customer (`*_bytes_per_customer`) and each
    curve of a `series` get their own chart when the result has them.
    """
    import matplotlib

    plots = []
    with matplotlib.rc_context(STYLE):
        for kind, caption, draw in _charts(result):
            figure = draw(result)
            if figure is not None:
                path = plots_dir / f"{_file_stem(result['name'])}-{kind}.png"
                _save(figure, path)
                plots.append(Plot(path, f"{result['name']}: {caption}"))
    return plots


Chart = Callable[[ResultDoc], "Figure | None"]


def _charts(result: ResultDoc) -> list[tuple[str, str, Chart]]:
    """(file suffix, caption, drawing function) of every chart a result may get."""
    charts: list[tuple[str, str, Chart]] = [
        ("subject-vs-baseline", "subject vs its same-run baseline", _comparison),
        ("figures", "every figure, median and repeats", _all_figures),
        ("percentiles", "latency percentiles by stage", _percentiles),
        ("memory", "memory per customer", _memory),
    ]
    for curve in curve_names(result.get("series") or {}):
        charts.append((curve, _curve_labels(curve)[0], partial(_series_chart, curve=curve)))
    return charts


def _file_stem(name: str) -> str:
    """A result's name made safe for a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _save(figure: Figure, path: Path) -> None:
    """A PNG through the Agg canvas, without the software version (nor any date) in it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", metadata={"Software": None})


def _comparison(result: ResultDoc) -> Figure:
    """The subject's and the baseline's medians and repeats, side by side."""
    names = [result["subject"]["figure"], result["baseline"]["figure"]]
    title = (
        f"{result['name']}: subject vs baseline (same run), ratio {format_figure(result['ratio'])}"
    )
    return _bar_panels(result, names, title)


def _all_figures(result: ResultDoc) -> Figure:
    """Every figure of the result: a benchmark this module does not know gets this chart."""
    return _bar_panels(result, list(result["figures"]), f"{result['name']}: every figure")


def _bar_panels(result: ResultDoc, names: Sequence[str], title: str) -> Figure:
    """Horizontal bars of the medians of `names`, one panel per unit, repeats as points.

    Figures of different units never share an axis (unitless ones are grouped by what they
    measure, `quantity_of`); subject and baseline are coloured, and a target is a red dashed
    mark across its bar.
    """
    from matplotlib.figure import Figure

    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(unit_of(name) or quantity_of(name), []).append(name)
    heights = [0.4 * len(members) + 0.6 for members in groups.values()]
    figure = Figure(figsize=(9, max(3.4, sum(heights) + 1.3)), layout="constrained")
    axes = figure.subplots(len(groups), 1, squeeze=False, height_ratios=heights)[:, 0]
    for ax, (label, members) in zip(axes, groups.items(), strict=True):
        _bar_panel(ax, result, members, label)
    figure.suptitle(title)
    figure.legend(handles=_bar_legend(result, names), loc="outside lower center", ncols=3)
    return figure


def _bar_panel(ax: Axes, result: ResultDoc, names: Sequence[str], label: str) -> None:
    """One panel of `_bar_panels`: bars, repeats, median labels and target marks.

    `label` names the x axis: the figures' unit, or what they measure when unitless.
    """
    figures = result["figures"]
    colors = _role_colors(result)
    rows = range(len(names))
    ax.barh(
        rows,
        [figures[name]["median"] for name in names],
        color=[colors.get(name, OTHER_COLOR) for name in names],
        height=0.6,
    )
    right = 0.0
    for row, name in zip(rows, names, strict=True):
        repeats, median = figures[name]["repeats"], figures[name]["median"]
        ax.scatter(repeats, _spread(row, len(repeats), 0.2), **REPEAT_STYLE)
        ax.annotate(
            f"median {format_figure(median)}",
            (max(median, *repeats), row),
            xytext=(5, 0),
            textcoords="offset points",
            va="center",
            bbox=LABEL_BOX,
            zorder=4,
        )
        bounds = _mark_targets(ax, result, name, row, across="row")
        right = max(right, median, *repeats, *bounds)
    ax.set_yticks(list(rows), list(names))
    ax.invert_yaxis()
    ax.set_xlim(0, right * 1.3 or 1.0)
    ax.xaxis.set_major_formatter(_tick_formatter())
    ax.set_xlabel(label)
    ax.grid(axis="y", visible=False)


def _role_colors(result: ResultDoc) -> dict[str, str]:
    """The colour of the subject's and the baseline's figure; others are OTHER_COLOR."""
    return {
        result["subject"]["figure"]: SUBJECT_COLOR,
        result["baseline"]["figure"]: BASELINE_COLOR,
    }


def _spread(center: float, count: int, half_width: float) -> list[float]:
    """Positions of `count` repeat points spread evenly over `center ± half_width`."""
    if count == 1:
        return [center]
    return [center - half_width + 2 * half_width * i / (count - 1) for i in range(count)]


def _mark_targets(
    ax: Axes, result: ResultDoc, name: str, position: float, *, across: Literal["row", "column"]
) -> list[float]:
    """Draw each target of figure `name` as a red dashed mark across its bar.

    `across` is "row" for a horizontal bar at y `position`, "column" for a vertical bar at
    x `position`. Returns the bounds drawn, so the caller can keep them in view.
    """
    bounds = []
    for target in result.get("targets", []):
        if target["figure"] != name:
            continue
        bound = target["at_least"] if target.get("at_least") is not None else target["at_most"]
        span = [position - 0.4, position + 0.4]
        xs, ys = ([bound, bound], span) if across == "row" else (span, [bound, bound])
        ax.plot(xs, ys, color=TARGET_COLOR, linestyle="--")
        ax.annotate(
            f"target {_bound(target)}: {'met' if target['met'] else 'NOT met'}",
            (xs[0], ys[0]),
            xytext=(3, 2),
            textcoords="offset points",
            color=TARGET_COLOR,
            fontsize=8,
        )
        bounds.append(bound)
    return bounds


def _bar_legend(result: ResultDoc, names: Sequence[str]) -> list[Artist]:
    """Legend entries for bars of `names`: the roles present, repeats, targets if drawn."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    roles = _role_colors(result)
    handles: list[Artist] = [
        Patch(color=color, label=f"{role}: median")
        for role, color in (("subject", SUBJECT_COLOR), ("baseline", BASELINE_COLOR))
        if color in (roles.get(name) for name in names)
    ]
    if any(name not in roles for name in names):
        handles.append(Patch(color=OTHER_COLOR, label="other figure: median"))
    handles.append(
        Line2D([], [], marker="o", color="black", linestyle="", markersize=4, label="repeat")
    )
    if any(target["figure"] in names for target in result.get("targets", [])):
        handles.append(Line2D([], [], color=TARGET_COLOR, linestyle="--", label="target"))
    return handles


def _percentiles(result: ResultDoc) -> Figure | None:
    """Grouped bars of the `<stage>_p<N>_us` figures, stages fastest first, on a log scale.

    None unless some stage reports at least two percentiles.
    """
    from matplotlib.figure import Figure

    stages = _percentile_stages(result["figures"])
    if not any(len(by_cut) >= 2 for by_cut in stages.values()):
        return None
    figures = result["figures"]
    cuts = sorted({cut for by_cut in stages.values() for cut in by_cut})
    width = 0.8 / len(cuts)
    figure = Figure(figsize=(10, 5.5), layout="constrained")
    ax = figure.subplots()
    for index, cut in enumerate(cuts):
        offset = (index - (len(cuts) - 1) / 2) * width
        present = [
            (x + offset, by_cut[cut]) for x, by_cut in enumerate(stages.values()) if cut in by_cut
        ]
        ax.bar(
            [x for x, _ in present],
            [figures[name]["median"] for _, name in present],
            width=width * 0.9,
            label=f"p{cut}, median of repeats",
        )
        for x, name in present:
            _column_points(ax, x, figures[name], width * 0.3)
    ax.scatter([], [], label="repeat", **REPEAT_STYLE)
    ax.set_yscale("log")
    _plain_log_ticks(ax)
    ax.set_xticks(range(len(stages)), list(stages), rotation=15)
    ax.set_xlabel("stage (fastest first)")
    ax.set_ylabel("latency (µs, log scale)")
    ax.set_title(f"{result['name']}: latency percentiles by stage")
    ax.legend(loc="upper left")
    return figure


def _percentile_stages(figures: Mapping[str, Any]) -> dict[str, dict[int, str]]:
    """Figure names by stage and percentile, stages ordered by their lowest median."""
    stages: dict[str, dict[int, str]] = {}
    for name in figures:
        match = PERCENTILE.match(name)
        if match:
            stages.setdefault(match["stage"], {})[int(match["cut"])] = name

    def fastest(stage: str) -> tuple[float, str]:
        return min(figures[name]["median"] for name in stages[stage].values()), stage

    return {stage: stages[stage] for stage in sorted(stages, key=fastest)}


def _tick_formatter() -> Formatter:
    """Tick labels as people read them: 20,000 rather than 20000 or 2×10⁴."""
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _: f"{value:,.0f}" if abs(value) >= 1000 else f"{value:g}")


def _plain_log_ticks(ax: Axes) -> None:
    """Label a log y axis at 1, 2 and 5 of each decade, in plain numbers."""
    from matplotlib.ticker import LogLocator, NullFormatter

    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(_tick_formatter())
    ax.yaxis.set_minor_formatter(NullFormatter())


def _column_points(ax: Axes, x: float, figure: Mapping[str, Any], half_width: float) -> None:
    """A vertical bar's repeats as points spread across it, and its median above them."""
    repeats = figure["repeats"]
    ax.scatter(_spread(x, len(repeats), half_width), repeats, **REPEAT_STYLE)
    ax.annotate(
        format_figure(figure["median"]),
        (x, max(figure["median"], *repeats)),
        xytext=(0, 4),
        textcoords="offset points",
        ha="center",
        fontsize=8,
    )


def _memory(result: ResultDoc) -> Figure | None:
    """Bars of the `*_bytes_per_customer` figures, and the markers' steady state on top.

    The event-id markers live for the dedup TTL, so a customer carries about
    `marker_bytes_per_event × events_per_customer_day × dedup_ttl_days` bytes of them on
    top of the features; that estimate is stacked on the subject when the result has its
    inputs. None when the result has no memory-per-customer figure.
    """
    from matplotlib.figure import Figure

    names = [name for name in result["figures"] if name.endswith("_bytes_per_customer")]
    if not names:
        return None
    figures = result["figures"]
    figure = Figure(figsize=(8, 5.5), layout="constrained")
    ax = figure.subplots()
    colors = _role_colors(result)
    for x, name in enumerate(names):
        ax.bar(x, figures[name]["median"], color=colors.get(name, OTHER_COLOR), width=0.6)
        _column_points(ax, x, figures[name], 0.2)
        _mark_targets(ax, result, name, x, across="column")
    labels = list(names)
    handles = _bar_legend(result, names)
    markers = _marker_estimate(result)
    if markers is not None and result["subject"]["figure"] in names:
        labels.append(_stack_markers(ax, result, len(names), markers))
        handles.insert(-1, _markers_patch())
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.margins(y=0.12)
    ax.yaxis.set_major_formatter(_tick_formatter())
    ax.set_ylabel("bytes per customer")
    ax.set_title(f"{result['name']}: Redis memory per customer")
    ax.legend(handles=handles, loc="upper left")
    return figure


def _stack_markers(ax: Axes, result: ResultDoc, x: int, markers: float) -> str:
    """Draw the subject's bar with the markers' estimate stacked on it; return its label."""
    features = result["subject"]["median"]
    ax.bar(x, features, color=SUBJECT_COLOR, width=0.6)
    ax.bar(x, markers, bottom=features, width=0.6, **MARKERS_STYLE)
    ax.annotate(
        f"+ {format_figure(markers)} of markers\n= {format_figure(features + markers)} in all",
        (x, features + markers),
        xytext=(0, 4),
        textcoords="offset points",
        ha="center",
        fontsize=8,
    )
    ttl = result["parameters"]["dedup_ttl_days"]
    return f"{result['subject']['figure']}\n+ event-id markers ({ttl:g}-day TTL)"


def _markers_patch() -> Artist:
    """The legend entry of the stacked markers' estimate."""
    from matplotlib.patches import Patch

    return Patch(label="event-id markers at steady state (estimate)", **MARKERS_STYLE)


def _marker_estimate(result: ResultDoc) -> float | None:
    """Bytes of event-id markers per customer at steady state, if the result has the inputs."""
    marker = result["figures"].get("marker_bytes_per_event")
    parameters = result.get("parameters", {})
    per_day, ttl = parameters.get("events_per_customer_day"), parameters.get("dedup_ttl_days")
    if marker is None or per_day is None or ttl is None:
        return None
    return float(marker["median"] * per_day * ttl)


def _curve_labels(curve: str) -> tuple[str, str]:
    """(title, y axis label) of a curve of `series`; its name for a curve not in CURVE_LABELS."""
    return CURVE_LABELS.get(curve, (curve.replace("_", " "),) * 2)


def _series_chart(result: ResultDoc, curve: str) -> Figure:
    """One curve of a result's `series` against the decisions, a line per policy.

    The legend sits outside the axes: curves of a learning run end anywhere in the plot.
    """
    from matplotlib.figure import Figure

    series = result["series"]
    title, ylabel = _curve_labels(curve)
    window = result.get("parameters", {}).get("series_window")
    if curve == "accept_rate" and window:
        title += f" (each point: the trailing {format_figure(window)} decisions)"
    figure = Figure(figsize=(10, 5), layout="constrained")
    ax = figure.subplots()
    for policy in ordered_policies(series[curve]):
        ax.plot(
            series["decisions"],
            series[curve][policy],
            label=policy,
            **POLICY_STYLES.get(policy, {}),
        )
    ax.xaxis.set_major_formatter(_tick_formatter())
    ax.yaxis.set_major_formatter(_tick_formatter())
    ax.set_xlabel("decisions")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{result['name']}: {title}")
    figure.legend(title="policy", loc="outside right upper")
    return figure


# -- writing --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Written:
    """What `write_report` wrote: the markdown, and the PNGs (None without matplotlib)."""

    report: Path
    plots: list[Path] | None


def write_report(
    results_dir: Path = RESULTS_DIR,
    report: Path = REPORT,
    plots_dir: Path = PLOTS_DIR,
    sources_dir: Path = BENCHMARKS_DIR,
) -> Written:
    """Render the report of every result in `results_dir` into `report` and `plots_dir`."""
    results = load_results(results_dir)
    plots = _write_plots(results, plots_dir)
    markdown = render_markdown(results, plots, report_dir=report.parent, sources_dir=sources_dir)
    report.write_text(markdown)
    paths = None if plots is None else [plot.path for group in plots.values() for plot in group]
    return Written(report, paths)


def _write_plots(results: Sequence[ResultDoc], plots_dir: Path) -> dict[str, list[Plot]] | None:
    """Every result's plots, by result name; None when matplotlib is not installed.

    PNGs in `plots_dir` that no result produced any more (a result file was removed, a
    chart no longer applies) are deleted, so the folder mirrors the results.
    """
    try:
        import matplotlib  # noqa: F401  (only to know whether plots can be drawn)
    except ImportError:
        return None
    plots = {result["name"]: render_plots(result, plots_dir) for result in results}
    current = {plot.path for group in plots.values() for plot in group}
    for stale in sorted(plots_dir.glob("*.png")):
        if stale not in current:
            stale.unlink()
    return plots


def main() -> None:
    written = write_report()
    print(f"wrote {written.report}")
    if written.plots is None:
        print(BENCH_EXTRA_HINT)
    else:
        print(f"wrote {len(written.plots)} plots in {PLOTS_DIR}")


if __name__ == "__main__":
    main()
