"""How a long-running engine process sets up Python's cyclic garbage collector.

Why: a worker allocates tens of objects per event (the event, its decoded fields, the
batch's lists) and keeps thousands of decoded customer states. With CPython's default
thresholds (700, 10, 10) the collector runs after every 700 container allocations, so a
batch's short-lived objects are still alive at each pass, get promoted to the older
generations, and make the older passes walk them again, a large share of the process's
CPU time on the store benchmark (benchmarks/NOTES.md). Larger thresholds let a batch's objects die
young and make the passes over old objects rare; freezing what start-up built keeps the
modules, the app and its services out of every pass. Cyclic garbage (asyncio's
exceptions and futures) is still collected, only in larger, rarer passes.
"""

from __future__ import annotations

import gc

#: (young allocations per pass, young passes per middle pass, middle passes per full pass)
GC_THRESHOLDS = (100_000, 50, 100)


def tune_garbage_collector() -> None:
    """Freeze everything alive now out of the collector's view and raise its thresholds.

    Call once, after start-up and before the steady work begins.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
