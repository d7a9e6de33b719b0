"""The action catalog: the shipped file loads; a bad definition fails at load, named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from actions.catalog import CatalogError, build_catalog, load_catalog, rule_context
from engine.core.settings import DEFAULT_CATALOG
from features.events import Channel
from features.reading import default_features


def action(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "id": "gold_card",
        "name": "Gold card",
        "kind": "cross_sell",
        "product": "credit_card",
        "channels": ["web", "mobile"],
        "value": 100.0,
        "base_rate": 0.05,
        "eligibility": "txn_count >= 5",
        "reason": "Regular spender",
    }
    spec.update(overrides)
    return spec


def document(*actions: dict[str, Any]) -> dict[str, Any]:
    return {"version": 1, "actions": list(actions)}


def test_the_shipped_catalog_loads() -> None:
    catalog = load_catalog(DEFAULT_CATALOG)
    written = yaml.safe_load(DEFAULT_CATALOG.read_text())
    assert catalog.version == written["version"]
    assert [action.id for action in catalog.actions] == [spec["id"] for spec in written["actions"]]
    assert set(catalog.base_rates()) == {action.id for action in catalog.actions}
    for item in catalog.actions:
        for channel in item.spec.channels:
            assert isinstance(item.is_eligible(rule_context(default_features(), channel)), bool)


def test_build_catalog_compiles_rules_and_serves_channels() -> None:
    catalog = build_catalog(
        document(
            action(),
            action(id="atm_tip", channels=["atm"], eligibility="true", base_rate=0.3),
        )
    )
    assert [item.id for item in catalog.for_channel(Channel.WEB)] == ["gold_card"]
    assert [item.id for item in catalog.for_channel(Channel.ATM)] == ["atm_tip"]
    assert catalog.for_channel(Channel.POS) == []
    assert catalog.base_rates() == {"gold_card": 0.05, "atm_tip": 0.3}
    gold = catalog.actions[0]
    features = default_features()
    assert gold.is_eligible(rule_context(features, Channel.WEB)) is False
    assert gold.is_eligible(rule_context(features | {"txn_count": 5}, Channel.WEB)) is True


def test_a_rule_may_read_the_channel() -> None:
    catalog = build_catalog(document(action(eligibility="channel == 'web'")))
    rule = catalog.actions[0]
    assert rule.is_eligible(rule_context(default_features(), Channel.WEB)) is True
    assert rule.is_eligible(rule_context(default_features(), Channel.MOBILE)) is False


@pytest.mark.parametrize(
    ("eligibility", "complaint"),
    [
        pytest.param("txn_count >= ", "does not parse", id="syntax-error"),
        pytest.param("txn_cnt >= 5", "txn_cnt", id="unknown-variable"),
        pytest.param("txn_count + 1", "must be true or false", id="non-boolean"),
        pytest.param("'yes'", "must be true or false", id="string"),
    ],
)
def test_a_bad_rule_is_refused_naming_the_action(eligibility: str, complaint: str) -> None:
    with pytest.raises(CatalogError, match="action 'bad_rule'") as error:
        build_catalog(document(action(), action(id="bad_rule", eligibility=eligibility)))
    assert complaint in str(error.value)


def test_an_unknown_variable_behind_a_short_circuit_is_refused() -> None:
    with pytest.raises(CatalogError, match=r"action 'bad_rule'.*txn_cnt"):
        build_catalog(document(action(id="bad_rule", eligibility="txn_count >= 5 && txn_cnt >= 5")))


def test_a_duplicate_id_is_refused_naming_it() -> None:
    with pytest.raises(CatalogError, match="action id 'gold_card' appears more than once"):
        build_catalog(document(action(), action(name="Another")))


@pytest.mark.parametrize(
    ("overrides", "location", "complaint"),
    [
        pytest.param({"colour": "red"}, "(actions[1]) colour", "Extra inputs", id="unknown-key"),
        pytest.param(
            {"channels": ["web", "fax"]}, "(actions[1]) channels.1", "'branch'", id="bad-channel"
        ),
        pytest.param({"base_rate": 1.5}, "(actions[1]) base_rate", "less than or equal", id="rate"),
        pytest.param({"value": 0}, "(actions[1]) value", "greater than 0", id="value"),
        pytest.param({"kind": "bribe"}, "(actions[1]) kind", "'offer'", id="kind"),
        pytest.param({"id": "{gold}"}, "(actions[1]) id", "pattern", id="bad-id"),
    ],
)
def test_a_bad_definition_is_refused_naming_where_it_is(
    overrides: dict[str, Any], location: str, complaint: str
) -> None:
    with pytest.raises(CatalogError) as error:
        build_catalog(document(action(id="fine"), action(**{"id": "broken", **overrides})))
    assert location in str(error.value)
    assert complaint in str(error.value)


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"colour": "red"}, id="unknown-key"),
        pytest.param({"channels": ["web", "fax"]}, id="bad-channel"),
    ],
)
def test_a_bad_definition_is_refused_naming_the_action_id(overrides: dict[str, Any]) -> None:
    with pytest.raises(CatalogError, match="broken"):
        build_catalog(document(action(id="fine"), action(id="broken", **overrides)))


def test_a_top_level_typo_is_refused() -> None:
    with pytest.raises(CatalogError, match="actoins"):
        build_catalog({"version": 1, "actions": [action()], "actoins": []})


@pytest.mark.parametrize("bad", [None, [], "text", {"version": 1, "actions": []}])
def test_a_document_that_is_not_a_catalog_is_refused(bad: Any) -> None:
    with pytest.raises(CatalogError):
        build_catalog(bad)


def test_load_catalog_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(document(action(), action(id="other"))))
    assert [item.id for item in load_catalog(path).actions] == ["gold_card", "other"]


def test_load_catalog_of_a_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "catalog.yaml"
    with pytest.raises(CatalogError, match="cannot read catalog") as error:
        load_catalog(path)
    assert str(error.value).startswith(str(path))


def test_load_catalog_of_bad_yaml_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text("version: 1\nactions: [\n")
    with pytest.raises(CatalogError, match="cannot read catalog") as error:
        load_catalog(path)
    assert str(error.value).startswith(str(path))


def test_load_catalog_names_the_path_and_the_action(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(document(action(id="bad_rule", eligibility="nope > 1"))))
    with pytest.raises(CatalogError, match="action 'bad_rule'") as error:
        load_catalog(path)
    assert str(error.value).startswith(f"{path}: ")


def test_a_rule_that_fails_for_a_new_customer_is_refused_naming_the_action() -> None:
    with pytest.raises(CatalogError, match=r"action 'divider'.*division by zero"):
        build_catalog(document(action(id="divider", eligibility="10 / txn_count > 1")))


def test_rules_may_use_the_model_scores() -> None:
    spec = {
        "id": "retain",
        "name": "Retention call",
        "kind": "retention",
        "product": "current_account",
        "channels": ["call_centre"],
        "value": 50.0,
        "base_rate": 0.1,
        "eligibility": "churn_risk > 0.3 && segment != 2",
        "reason": "at risk of leaving",
    }
    catalog = build_catalog({"version": 1, "actions": [spec]})
    assert [action.id for action in catalog.actions] == ["retain"]
