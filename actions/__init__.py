"""Actions: the catalog, eligibility rules, `decide()`, the decision log, and
`next_best_actions()`, one decision end to end as the API and the benchmark run it.

Imports `features` and `models`; never the engine or the API.
"""
