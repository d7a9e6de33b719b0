"""Customer features: the event schema, the feature registry and the Redis feature store.

This package is the domain's input layer. It imports nothing else of ours.
"""
