"""Propensity models: how likely a customer is to accept each candidate action.

Imports only `features`. The online learners (river) are tracked in their own issue;
today the package holds the static base-rate model and the protocol learners will meet.
"""
