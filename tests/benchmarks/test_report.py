"""The benchmark report is rendered from the result files alone, the same way every time.

Synthetic results are written into a temporary folder; the report and its PNGs go there too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.report import (
    BENCH_EXTRA_HINT,
    Written,
    describe_benchmark,
    load_results,
    ordered_policies,
    quantity_of,
    render_markdown,
    unit_of,
    write_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MACHINE = {
    "cpu_model": "AMD EPYC",
    "cores": 2,
    "cores_usable": 2,
    "memory_mib": 24105,
    "os": "Debian GNU/Linux 12 (bookworm)",
    "python": "CPython 3.11.7",
    "packages": {"redis": "8.1.0"},
    "git": {"revision": "050f36edfe082237", "dirty": True, "source_sha256": "f6bd97735949aa"},
    "load_average": [0.57, 0.71, 1.0],
}


def result(name: str, figures: dict[str, list[float]], **extra: Any) -> dict[str, Any]:
    """A result document as `Result.to_dict` writes it; the first figure is the subject."""
    medians = {figure: sorted(values)[len(values) // 2] for figure, values in figures.items()}
    subject, baseline = list(figures)[:2]
    return {
        "name": name,
        "timestamp": "2026-11-23T12:23:53+00:00",
        "parameters": {"quick": True},
        "figures": {
            figure: {"repeats": values, "median": medians[figure]}
            for figure, values in figures.items()
        },
        "subject": {"figure": subject, "median": medians[subject]},
        "baseline": {"figure": baseline, "median": medians[baseline]},
        "ratio": medians[subject] / medians[baseline],
        "targets": [],
        "notes": [],
        "machine": MACHINE,
        **extra,
    }


PIPELINE = result(
    "ingest_pipeline",
    {
        "worker_events_per_s": [10640.0, 11934.0, 10652.0],
        "baseline_events_per_s": [12338.0, 11216.0, 11087.0],
    },
    targets=[
        {
            "figure": "worker_events_per_s",
            "at_least": 20000,
            "at_most": None,
            "median": 10652.0,
            "met": False,
        }
    ],
    notes=["baseline: a plain aiokafka loop"],
)
MEMORY = result(
    "memory_per_customer",
    {
        "features_bytes_per_customer": [372.0, 351.0, 350.0],
        "one_field_hash_bytes_per_customer": [100.0, 98.0, 97.9],
        "marker_bytes_per_event": [101.0, 102.0, 101.7],
    },
    parameters={"quick": False, "events_per_customer_day": 2.7, "dedup_ttl_days": 7.0},
    targets=[
        {
            "figure": "features_bytes_per_customer",
            "at_least": None,
            "at_most": 1536,
            "median": 351.0,
            "met": True,
        }
    ],
)
LATENCY = result(
    "decision_latency",
    {
        "http_p50_us": [1345.0, 1672.0, 1605.0],
        "handler_p50_us": [875.0, 904.0, 1153.0],
        "http_p99_us": [2336.0, 2444.0, 3049.0],
        "handler_p99_us": [1405.0, 1466.0, 1664.0],
    },
)
LEARNING = result(
    "learning_quality",
    {"learner_accept_rate": [0.12, 0.13, 0.11], "random_accept_rate": [0.05, 0.05, 0.06]},
    series={
        "decisions": [1000, 2000, 3000],
        "accept_rate": {
            "random": [0.05, 0.05, 0.05],
            "learner": [0.06, 0.1, 0.12],
            "oracle": [0.2, 0.2, 0.2],
        },
        "cumulative_regret": {
            "random": [150.0, 300.0, 450.0],
            "learner": [140.0, 240.0, 320.0],
            "oracle": [0.0, 0.0, 0.0],
        },
    },
)
UNKNOWN = result(
    "mystery_bench",
    {"widgets_per_s": [5.0, 6.0, 7.0], "gadgets_per_s": [2.0, 3.0, 4.0], "oddity": [1.0, 1.0, 1.0]},
)


def write_results(directory: Path, *results: dict[str, Any]) -> Path:
    """Write each result as `<name>.json` into `directory`; return it."""
    directory.mkdir(parents=True, exist_ok=True)
    for document in results:
        (directory / f"{document['name']}.json").write_text(json.dumps(document))
    return directory


def render(tmp_path: Path, *results: dict[str, Any]) -> tuple[str, Written]:
    """Write `results` into tmp_path/results and render the report and plots beside them."""
    results_dir = write_results(tmp_path / "results", *results)
    written = write_report(results_dir, tmp_path / "REPORT.md", tmp_path / "report")
    return written.report.read_text(), written


def markdown_of(tmp_path: Path, *results: dict[str, Any]) -> str:
    """The markdown alone, as if no result had a plot: fast, for the text's tests."""
    return render_markdown(load_results(write_results(tmp_path, *results)), {})


def section(markdown: str, name: str) -> str:
    """The text of one benchmark's section."""
    return markdown.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]


def plot_names(written: Written) -> list[str]:
    assert written.plots is not None
    return sorted(path.name for path in written.plots)


# -- markdown -------------------------------------------------------------------------------


def test_a_section_has_the_figures_repeats_ratio_command_and_machine(tmp_path: Path) -> None:
    text = section(markdown_of(tmp_path, PIPELINE), "ingest_pipeline")
    assert (
        "| `worker_events_per_s` | subject | events/s | 10,652 | 10,640 · 11,934 · 10,652 |" in text
    )
    assert "| `baseline_events_per_s` | baseline | events/s | 11,216 |" in text
    assert "ratio subject / baseline **0.950**" in text
    assert "`python -m benchmarks.ingest_pipeline --quick`" in text
    assert "`python -m benchmarks.run --quick ingest_pipeline`" in text
    assert "AMD EPYC, 2 cores, 24 GiB" in text
    assert "load average 0.57 / 0.71 / 1.00" in text
    assert "git 050f36e (dirty" in text
    assert "measured 2026-11-23T12:23:53+00:00" in text
    assert "- baseline: a plain aiokafka loop" in text


def test_an_unmet_target_is_called_not_met(tmp_path: Path) -> None:
    markdown = markdown_of(tmp_path, PIPELINE, MEMORY)
    assert "`worker_events_per_s` ≥ 20,000: **NOT met** (median 10,652)" in markdown
    assert "`features_bytes_per_customer` ≤ 1,536: met (median 351)" in markdown
    assert "NOT met" not in section(markdown, "memory_per_customer")


def test_a_busy_machine_is_flagged(tmp_path: Path) -> None:
    busy = result(
        "busy",
        {"a_per_s": [1.0], "b_per_s": [2.0]},
        machine=MACHINE | {"load_average": [3.5, 2.0, 1.0]},
    )
    markdown = markdown_of(tmp_path, busy, PIPELINE)
    assert "**busy**, above the core count" in section(markdown, "busy")
    assert "busy**" not in section(markdown, "ingest_pipeline")


def test_the_overview_links_every_benchmark(tmp_path: Path) -> None:
    overview = markdown_of(tmp_path, PIPELINE, MEMORY).split("\n## ", 1)[0]
    assert "| [ingest_pipeline](#ingest_pipeline) | `worker_events_per_s` 10,652 |" in overview
    assert "| [memory_per_customer](#memory_per_customer) |" in overview
    assert overview.index("ingest_pipeline") < overview.index("memory_per_customer")


def test_an_unknown_benchmark_gets_a_generic_section(tmp_path: Path) -> None:
    text = section(markdown_of(tmp_path, UNKNOWN), "mystery_bench")
    assert "No module `benchmarks/mystery_bench.py` describes this benchmark" in text
    assert "| `widgets_per_s` | subject | widgets/s | 6.00 | 5.00 · 6.00 · 7.00 |" in text
    assert "| `oddity` |  | — | 1.00 | 1.00 · 1.00 · 1.00 |" in text
    assert "ratio subject / baseline **2.00**" in text


def test_a_known_benchmark_is_described_by_its_module_docstring(tmp_path: Path) -> None:
    (tmp_path / "ingest_store.py").write_text(
        '"""How fast events are applied.\n\nBaseline: one EVALSHA.\n\n'
        'Run: `python -m benchmarks.ingest_store`.\n"""\n\nNAME = "ingest_store"\n'
    )
    assert describe_benchmark("ingest_store", tmp_path) == (
        "How fast events are applied.\n\nBaseline: one EVALSHA."
    )
    assert describe_benchmark("absent", tmp_path) is None
    real = describe_benchmark("ingest_store")
    assert real is not None
    assert real.startswith("How fast one process applies events")


def test_the_series_end_points_are_tabled_per_policy(tmp_path: Path) -> None:
    text = section(markdown_of(tmp_path, LEARNING), "learning_quality")
    assert "At the end of the series (3,000 decisions)" in text
    assert "| policy | accept rate | cumulative regret |" in text
    rows = [
        line for line in text.splitlines() if line.startswith(("| learner", "| random", "| oracle"))
    ]
    assert rows == [
        "| learner | 0.120 | 320 |",
        "| random | 0.0500 | 450 |",
        "| oracle | 0.200 | 0 |",
    ]


def test_a_result_without_series_gets_no_series_table(tmp_path: Path) -> None:
    assert "At the end of the series" not in markdown_of(tmp_path, PIPELINE)


def test_no_results_still_gives_a_report(tmp_path: Path) -> None:
    markdown, written = render(tmp_path)
    assert "No results yet" in markdown
    assert written.plots in ([], None)


@pytest.mark.parametrize(
    ("figure", "unit"),
    [
        ("worker_events_per_s", "events/s"),
        ("http_p99_us", "µs"),
        ("api_cpu_us_per_request", "µs per request"),
        ("features_bytes_per_customer", "bytes per customer"),
        ("marker_share_of_memory", "share of memory"),
        ("checkpoint_kib", "KiB"),
        ("worker_startup_s", "s"),
        ("events_per_kafka_message", "events per kafka message"),
        ("feature_hash_fields", ""),
        ("learner_accept_rate", ""),
    ],
)
def test_a_figure_name_gives_its_unit(figure: str, unit: str) -> None:
    assert unit_of(figure) == unit


@pytest.mark.parametrize(
    ("figure", "quantity"),
    [
        ("learner_accept_rate", "accept rate"),
        ("learner_over_random", "ratio"),
        ("learner_over_oracle_last", "ratio"),
        ("oddity", "oddity"),
    ],
)
def test_a_figure_without_unit_is_grouped_by_what_it_measures(figure: str, quantity: str) -> None:
    assert quantity_of(figure) == quantity


def test_known_policies_come_first_in_reading_order() -> None:
    assert ordered_policies(["zeta", "oracle", "random", "learner", "alpha", "vw"]) == [
        "learner",
        "vw",
        "random",
        "oracle",
        "alpha",
        "zeta",
    ]


def test_without_matplotlib_the_markdown_says_how_to_get_the_plots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)
    markdown, written = render(tmp_path, PIPELINE)
    assert written.plots is None
    assert BENCH_EXTRA_HINT in markdown
    assert "pip install -e .[bench]" in markdown
    assert "![" not in markdown
    assert not (tmp_path / "report").exists()
    assert "10,652" in markdown


# -- plots ----------------------------------------------------------------------------------

ALL = (PIPELINE, MEMORY, LATENCY, LEARNING, UNKNOWN)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Written]:
    """The report of every synthetic result, drawn once for the plot tests."""
    pytest.importorskip("matplotlib", reason="plots need the bench extra")
    return render(tmp_path_factory.mktemp("all"), *ALL)


def test_every_result_gets_the_charts_that_fit_it(rendered: tuple[str, Written]) -> None:
    markdown, written = rendered
    assert plot_names(written) == [
        "decision_latency-figures.png",
        "decision_latency-percentiles.png",
        "decision_latency-subject-vs-baseline.png",
        "ingest_pipeline-figures.png",
        "ingest_pipeline-subject-vs-baseline.png",
        "learning_quality-accept_rate.png",
        "learning_quality-cumulative_regret.png",
        "learning_quality-figures.png",
        "learning_quality-subject-vs-baseline.png",
        "memory_per_customer-figures.png",
        "memory_per_customer-memory.png",
        "memory_per_customer-subject-vs-baseline.png",
        "mystery_bench-figures.png",
        "mystery_bench-subject-vs-baseline.png",
    ]
    assert (
        "![mystery_bench: every figure, median and repeats](report/mystery_bench-figures.png)"
        in section(markdown, "mystery_bench")
    )


def test_a_result_without_series_gets_no_curve(rendered: tuple[str, Written]) -> None:
    _, written = rendered
    curves = [name for name in plot_names(written) if "accept_rate" in name or "regret" in name]
    assert curves == ["learning_quality-accept_rate.png", "learning_quality-cumulative_regret.png"]


def test_the_plots_are_valid_pngs_linked_from_the_report(rendered: tuple[str, Written]) -> None:
    from PIL import Image

    markdown, written = rendered
    assert written.plots
    for path in written.plots:
        assert path.read_bytes().startswith(PNG_SIGNATURE)
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            width, height = image.size
            assert width >= 600
            assert height >= 300
            assert "Software" not in image.info
        assert f"](report/{path.name})" in markdown


def test_the_same_results_give_the_same_bytes(
    rendered: tuple[str, Written], tmp_path: Path
) -> None:
    first, first_written = rendered
    second, second_written = render(tmp_path, *ALL)
    assert first == second
    assert first_written.plots is not None
    assert second_written.plots is not None
    for one, two in zip(first_written.plots, second_written.plots, strict=True):
        assert one.name == two.name
        assert one.read_bytes() == two.read_bytes(), one.name


def test_plots_of_vanished_results_are_removed(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="plots need the bench extra")
    render(tmp_path, PIPELINE, UNKNOWN)
    (tmp_path / "results" / "mystery_bench.json").unlink()
    _, written = render(tmp_path)
    assert sorted(path.name for path in (tmp_path / "report").glob("*.png")) == plot_names(written)
    assert plot_names(written) == [
        "ingest_pipeline-figures.png",
        "ingest_pipeline-subject-vs-baseline.png",
    ]
