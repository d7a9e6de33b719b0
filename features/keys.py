"""Every Redis key of the engine, built in one place.

Why one module: the layout is a contract between processes (the worker writes what the
API reads, the learner locks what the workers skip) and with the operators who inspect a
Redis. Spelled out in each store, it drifted; here it reads as one table.

Every key starts with the configured prefix (`NBA_KEY_PREFIX`, so several engines can
share one Redis). A customer's keys carry the customer's id as a hash tag, `{C42}`, so
that all of them sit in one Redis Cluster slot and a script may touch them together; the
engine-wide keys of one job share a tag of their own where a script needs them together
(`{noanswer}`).

>>> keys = Keys("t1:")
>>> keys.state("C42"), keys.decision("C42", "d7"), keys.model("propensity")
('t1:cust:{C42}:s', 't1:cust:{C42}:d:d7', 't1:nba:model:propensity')
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    """The keys under one prefix."""

    prefix: str = ""

    # -- one customer's keys (hash tag: the customer's id) ---------------------------------

    def customer(self, customer_id: str, suffix: str) -> str:
        """A key of one customer: `cust:{<id>}:<suffix>`."""
        return f"{self.prefix}cust:{{{customer_id}}}:{suffix}"

    def state(self, customer_id: str) -> str:
        """The customer's features, one MessagePack value (`features.state`)."""
        return self.customer(customer_id, "s")

    def alias(self, identifier: str) -> str:
        """The customer an identifier was linked to (`features.store`)."""
        return self.customer(identifier, "alias")

    def churn_snapshot(self, customer_id: str) -> str:
        """The customer's pending churn snapshot (`models.churn_labels`)."""
        return self.customer(customer_id, "churn")

    def decision(self, customer_id: str, decision_id: str) -> str:
        """One decision awaiting its answer (`actions.decision_log`)."""
        return self.customer(customer_id, f"d:{decision_id}")

    def answered(self, customer_id: str, decision_id: str, action_id: str) -> str:
        """The mark that one shown action of a decision was answered."""
        return f"{self.decision(customer_id, decision_id)}:a:{action_id}"

    @property
    def states_pattern(self) -> str:
        """A SCAN pattern matching every customer's features."""
        return f"{self.prefix}cust:*:s"

    @property
    def customers_pattern(self) -> str:
        """A SCAN pattern matching every key of every customer."""
        return f"{self.prefix}cust:*"

    # -- engine-wide keys ------------------------------------------------------------------

    def engine(self, name: str) -> str:
        """An engine-wide key: `nba:<name>`."""
        return f"{self.prefix}nba:{name}"

    @property
    def ingest_counts(self) -> str:
        return self.engine("ingest")

    @property
    def workers(self) -> str:
        return self.engine("workers")

    @property
    def processes(self) -> str:
        return self.engine("processes")

    def model(self, name: str) -> str:
        """A model's signed checkpoint (`models.checkpoints`)."""
        return self.engine(f"model:{name}")

    @property
    def bandit_log(self) -> str:
        return self.engine("banditlog")

    @property
    def outcome_counts(self) -> str:
        return self.engine("outcomes")

    def no_answer(self, part: str) -> str:
        """The no-answer windows' keys, one slot for all (`actions.decision_log`)."""
        return self.engine(f"{{noanswer}}:{part}")

    def churn(self, part: str) -> str:
        """The churn label store's shared keys (`models.churn_labels`)."""
        return self.engine(f"churn:{part}")

    @property
    def segment_samples(self) -> str:
        return self.engine("segments:samples")

    @property
    def customer_models_lock(self) -> str:
        return self.engine("lock:customer-models")

    @property
    def rfm_edges(self) -> str:
        """The customer base's RFM quintile edges (`features.tiers`)."""
        return f"{self.prefix}rfm:edges"

    @property
    def rfm_walker_lock(self) -> str:
        return f"{self.prefix}rfm:walker"
