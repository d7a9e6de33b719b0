"""Actions: the catalog, eligibility rules, `decide()` and the decision log.

Imports `features` and `models`; never the engine or the API.
"""
