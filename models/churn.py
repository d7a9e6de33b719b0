"""Former home of the churn and segment wiring, now split by job; one alias is left.

- `models.churn_model`: `ChurnModel`, the river classifier;
- `models.churn_labels`: `PendingChurnLabels` and its scripts, `Snapshot`, `Resolution`;
- `models.customer_model_stores`: `CustomerModelStores`, the two signed checkpoints;
- `models.snapshots`: `SnapshotBudget` and `CustomerModelsFeed`, each worker's part;
- `models.customer_models`: `CustomerModelsLearner`, the one learner.

Why this module stays: churn checkpoints are pickles, and a pickle names its class by
module, so every `ChurnModel` checkpoint saved before the split refers to
`models.churn.ChurnModel` and loads only while that name resolves. New checkpoints name
`models.churn_model.ChurnModel`; the alias can go once no stored checkpoint predates the
split.
"""

from models.churn_model import ChurnModel

__all__ = ["ChurnModel"]
