"""Actions: the catalog, eligibility rules and `decide()`.

Imports `features` and `models`; never the engine or the API.
"""
