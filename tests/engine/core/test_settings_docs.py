"""docs/configuration.md's table of `NBA_*` variables is generated from the settings."""

from __future__ import annotations

import pytest

from engine.core.settings import Settings
from engine.core.settings_docs import CONFIGURATION, END, START, render_table, with_table


def test_the_configuration_table_in_the_docs_is_generated_from_the_settings() -> None:
    text = CONFIGURATION.read_text()
    assert with_table(text) == text, (
        "run `python -m engine.core.settings_docs` to refresh docs/configuration.md"
    )


def test_every_setting_has_a_row_with_its_default_and_a_description() -> None:
    rows = {line.split(" | ")[0][2:]: line for line in render_table().splitlines()[2:]}
    assert set(rows) == {f"`NBA_{name.upper()}`" for name in Settings.model_fields}
    undescribed = [name for name, field in Settings.model_fields.items() if not field.description]
    assert not undescribed, f"describe these settings in engine/core/settings.py: {undescribed}"
    assert "| `NBA_TOPIC_PARTITIONS` | `8` | ≥ 1 |" in rows["`NBA_TOPIC_PARTITIONS`"]
    assert (
        "| `NBA_EXPLORATION` | `thompson` | `thompson`, `epsilon_greedy`, `none` |"
        in (rows["`NBA_EXPLORATION`"])
    )
    assert "| `NBA_REDIS_URL` | unset |" in rows["`NBA_REDIS_URL`"]
    assert "| `NBA_CATALOG_PATH` | `actions/catalog.yaml` |" in rows["`NBA_CATALOG_PATH`"]


def test_only_the_text_between_the_markers_is_replaced() -> None:
    text = with_table(f"# Title\nbefore\n{START}\nold table\n{END}\nafter\n")
    assert "old table" not in text
    assert text.startswith("# Title\nbefore\n")
    assert text.endswith(f"{END}\nafter\n")
    assert "`NBA_STALL_S`" in text
    with pytest.raises(ValueError, match="markers"):
        with_table("# no markers\n")
