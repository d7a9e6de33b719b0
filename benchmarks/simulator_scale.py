"""How the simulated bank scales: building it and simulating a day, up to 1,000,000 customers.

The proof issue asks for a simulated bank that scales to a million customers. Subject: the
seconds one ordinary day takes to simulate (`events_for_day(1)`: every customer's events of
the day as wire dicts, as `nba demo` and the benchmarks consume them), per million
customers, at 1,000,000 customers (100,000 with --quick). Baseline, in the same run: the
same at a tenth of the customers, scaled to a million; a ratio near 1 means the cost grows
linearly with the population. Also reported: the time to build the bank (draw every
customer's hidden traits and holdings), the events of the day, and the process's peak RSS.

Run: `python -m benchmarks.simulator_scale [--quick]`.
"""

from __future__ import annotations

import gc
import resource
import time

from benchmarks.common import FIRST_TRAFFIC_DAY, Result, benchmark_main, median_of, simulated_bank

NAME = "simulator_scale"
#: (customers, repeats)
FULL = (1_000_000, 3)
QUICK = (100_000, 3)
#: The baseline population, as a share of the subject's.
BASELINE_SHARE = 10


def run(quick: bool = False) -> Result:
    """Simulate a day at both sizes per repeat; return the result (not yet written)."""
    customers, repeats = QUICK if quick else FULL
    print(f"{NAME}: one day of {customers:,} and of {customers // BASELINE_SHARE:,} customers")
    figures = median_of(repeats, lambda: _one_repeat(customers))
    return Result(
        name=NAME,
        parameters={"quick": quick, "customers": customers, "repeats": repeats},
        figures=figures,
        subject="day_s_per_million_customers",
        baseline="small_day_s_per_million_customers",
        notes=[
            f"subject: one ordinary day (day {FIRST_TRAFFIC_DAY}) of {customers:,} customers; "
            f"baseline: the same day of {customers // BASELINE_SHARE:,} customers; both in "
            "seconds per million customers, so a ratio near 1 is linear scaling",
            "peak RSS is the whole process's (Python, numpy, the day's event dicts)",
        ],
    )


def _one_repeat(customers: int) -> dict[str, float]:
    small_s, _, _ = _day(customers // BASELINE_SHARE)
    day_s, build_s, events = _day(customers)
    per_million = 1_000_000 / customers
    return {
        "day_s_per_million_customers": day_s * per_million,
        "small_day_s_per_million_customers": small_s * per_million * BASELINE_SHARE,
        "build_s": build_s,
        "day_s": day_s,
        "events_per_day": events,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _day(customers: int) -> tuple[float, float, int]:
    """(seconds to simulate the day, seconds to build the bank, events of the day)."""
    started = time.perf_counter()
    bank = simulated_bank(customers)
    built = time.perf_counter()
    events = len(bank.events_for_day(FIRST_TRAFFIC_DAY))
    finished = time.perf_counter()
    del bank
    gc.collect()
    return finished - built, built - started, events


def main() -> None:
    benchmark_main(run, __doc__ or NAME)


if __name__ == "__main__":
    main()
