"""Benchmarks of nba-engine: each prints its figures and writes them to `benchmarks/results/`.

Performance lives here, not in timed tests. Every benchmark measures a baseline in the same
run (the same machine, the same noise) and reports medians of repeats and the ratio to it.
Run them all with `python -m benchmarks.run [--quick] [names...]`.
"""
