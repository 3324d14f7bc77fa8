"""Resident memory over many traced invocations: does anything grow without bound?

    python benchmarks/memory.py [--invocations 100000] [--warmup 5000] [--chain 4-run]

Runs the chain (``overhead.py``'s 4-run chain by default) with ``LLMObs(sqlite).langchain_handler()``
(defaults: batch processor, Prometheus on the global registry). After ``--warmup`` invocations
(imports, caches, the recorder's memory of 20,000 recently ended spans, SQLite's page cache,
label series all settled) it records the RSS, then runs ``--invocations`` more, sampling RSS
every tenth; the final figure is taken after the writer has stored everything (``flush``) and
a ``gc.collect()``. Target: growth ≤ 5 %.

Besides RSS it reports live Python memory blocks (``sys.getallocatedblocks``): RSS also keeps
the allocator's high-water mark of the writer's backlog (freed spans leave partly used arenas
behind), so a flat block count with a rising RSS means a peak, not a leak.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import CHAINS

from llmobs_callbacks import LLMObs


def rss_mb() -> float:
    """Resident set size of this process in MB (Linux ``/proc``; ``ru_maxrss`` elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--invocations", type=int, default=100_000)
    parser.add_argument("--warmup", type=int, default=20_000)
    parser.add_argument("--chain", default="4-run chain", choices=list(CHAINS))
    parser.add_argument(
        "--no-handler", action="store_true", help="the same chain untraced: what LangChain itself grows by"
    )
    args = parser.parse_args()
    tmp_dir = tempfile.TemporaryDirectory(prefix="llmobs-memory-")
    tmp = Path(tmp_dir.name)
    obs = LLMObs(f"sqlite:///{tmp / 'memory.db'}")
    factory, x = CHAINS[args.chain]
    chain = factory()
    config = {} if args.no_handler else {"callbacks": [obs.langchain_handler()]}
    for _ in range(args.warmup):
        chain.invoke(x, config=config)
    assert obs.flush(120)
    gc.collect()
    base, blocks0 = rss_mb(), sys.getallocatedblocks()
    print(
        f"{args.chain}{' (no handler)' if args.no_handler else ''}: RSS after {args.warmup:,} warm-up "
        f"invocations: {base:.1f} MB"
    )
    step = max(args.invocations // 10, 1)
    peak = base
    t0 = time.perf_counter()
    for i in range(1, args.invocations + 1):
        chain.invoke(x, config=config)
        if i % step == 0:
            now = rss_mb()
            peak = max(peak, now)
            print(
                f"  {i:>9,} invocations: RSS {now:7.1f} MB ({(now - base) / base * 100:+.1f} %), "
                f"Python blocks {(sys.getallocatedblocks() - blocks0) / blocks0 * 100:+.1f} %, "
                f"writer queue {obs.processor.queue_size():,}"
            )
    elapsed = time.perf_counter() - t0
    assert obs.flush(300)
    gc.collect()
    end, blocks = rss_mb(), sys.getallocatedblocks()
    stats = obs.stats()
    with obs.sql.engine.connect() as conn:
        spans = conn.exec_driver_sql("select count(*) from spans").scalar()
    obs.shutdown()
    tmp_dir.cleanup()
    growth = (end - base) / base * 100
    print(
        f"after {args.invocations:,} invocations ({elapsed:.0f} s) and a flush: RSS {end:.1f} MB, "
        f"growth {growth:+.2f} % (peak {peak:.1f} MB); "
        f"live Python blocks {(blocks - blocks0) / blocks0 * 100:+.2f} %; "
        f"spans stored {spans:,}, "
        f"dropped {sum(stats['spans_dropped'].values())}"
    )
    print("PASS: growth ≤ 5 %" if growth <= 5 else "FAIL: growth > 5 %")


if __name__ == "__main__":
    main()
