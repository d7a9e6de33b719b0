"""The README's performance table is generated from the stored results."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.readme import END, START, render_table, update_readme

RESULT = {
    "name": "ingest_store",
    "timestamp": "2026-11-23T12:22:00+00:00",
    "parameters": {"quick": True},
    "subject": {"figure": "store_events_per_s", "median": 16360.2},
    "baseline": {"figure": "baseline_events_per_s", "median": 139935.0},
    "ratio": 0.1169,
    "targets": [
        {"figure": "store_events_per_s", "at_least": 50000.0, "at_most": None, "met": False}
    ],
    "machine": {
        "cpu_model": "AMD EPYC",
        "cores": 2,
        "memory_mib": 24105,
        "python": "CPython 3.11.7",
        "git": {"revision": "050f36edfe08", "dirty": False},
    },
}


def test_a_row_per_result_with_its_figures_target_and_command(tmp_path: Path) -> None:
    (tmp_path / "ingest_store.json").write_text(json.dumps(RESULT))
    table = render_table(tmp_path)
    row = next(line for line in table.splitlines() if line.startswith("| `ingest_store`"))
    assert "16,360" in row
    assert "139,935" in row
    assert "0.117" in row
    assert "≥ 50,000: **not met**" in row
    assert "`python -m benchmarks.ingest_store --quick`" in row
    assert "050f36e" in row
    assert "AMD EPYC, 2 cores, 24 GiB" in table


def test_only_the_text_between_the_markers_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "ingest_store.json").write_text(json.dumps(RESULT))
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\nbefore\n{START}\nold table\n{END}\nafter\n")
    assert update_readme(readme, tmp_path)
    text = readme.read_text()
    assert "old table" not in text
    assert text.startswith("# Title\nbefore\n")
    assert text.endswith(f"{END}\nafter\n")
    assert "16,360" in text


def test_a_readme_without_markers_is_left_alone(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n")
    assert not update_readme(readme, tmp_path)
    assert readme.read_text() == "# Title\n"
