"""The Redis key layout is a contract with stored data: these names must not drift."""

from __future__ import annotations

import doctest

import features.keys
from features.keys import Keys


def test_every_key_keeps_its_name() -> None:
    keys = Keys("p:")
    assert {
        "state": keys.state("C1"),
        "alias": keys.alias("card:41"),
        "churn_snapshot": keys.churn_snapshot("C1"),
        "decision": keys.decision("C1", "d9"),
        "answered": keys.answered("C1", "d9", "loan"),
        "ingest": keys.ingest_counts,
        "workers": keys.workers,
        "processes": keys.processes,
        "model": keys.model("churn"),
        "bandit_log": keys.bandit_log,
        "outcome_counts": keys.outcome_counts,
        "no_answer": keys.no_answer("pending"),
        "churn": keys.churn("due"),
        "segment_samples": keys.segment_samples,
        "customer_models_lock": keys.customer_models_lock,
        "rfm_edges": keys.rfm_edges,
        "rfm_walker_lock": keys.rfm_walker_lock,
    } == {
        "state": "p:cust:{C1}:s",
        "alias": "p:cust:{card:41}:alias",
        "churn_snapshot": "p:cust:{C1}:churn",
        "decision": "p:cust:{C1}:d:d9",
        "answered": "p:cust:{C1}:d:d9:a:loan",
        "ingest": "p:nba:ingest",
        "workers": "p:nba:workers",
        "processes": "p:nba:processes",
        "model": "p:nba:model:churn",
        "bandit_log": "p:nba:banditlog",
        "outcome_counts": "p:nba:outcomes",
        "no_answer": "p:nba:{noanswer}:pending",
        "churn": "p:nba:churn:due",
        "segment_samples": "p:nba:segments:samples",
        "customer_models_lock": "p:nba:lock:customer-models",
        "rfm_edges": "p:rfm:edges",
        "rfm_walker_lock": "p:rfm:walker",
    }
    assert (keys.states_pattern, keys.customers_pattern) == ("p:cust:*:s", "p:cust:*")


def test_the_examples_in_the_docstring_hold() -> None:
    assert doctest.testmod(features.keys).failed == 0
