"""Propensity models: how likely a customer is to accept each candidate action.

Imports only `features`. `online` learns a propensity per action with river,
`exploration` ranks with it while still learning, `learning` turns answers into learned
checkpoints (`checkpoints`, signed by `persistence`), `offpolicy` evaluates policies from
the decision log; `propensity` holds the protocol and the static base-rate baseline;
`scores` gives a customer's churn risk and segment from the serving churn and segment
models.
"""
