"""Where storing one scored hour spends its time (docs/study.md): cProfile over single-hour ingests into SQLite,
without the blob, on bench/store.py's synthetic hours (minutes basis included).

    python -m bench.store_profile [--ingests 35] [--top 25]

Prints the median ingest time and the functions by cumulative time; writes nothing.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.store import answer, fused_hour, hour_summary
from store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ingests", type=int, default=35)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    pool = [hour_summary(rng, "2025-03-01T08:00:00") for _ in range(4)]
    tiny = fused_hour(rng, rows=2)  # a two-row blob: the database part alone
    warm = 5
    answers = [answer(pool, f"2025-01-{1 + i % 28:02d}T{8 + i // 28:02d}:00:00", 1, rng)
               for i in range(warm + args.ingests)]
    with tempfile.TemporaryDirectory(prefix="store-profile-") as folder:
        store = Store.open(f"sqlite:///{folder}/study.db", blob_root=Path(folder) / "blobs")
        for i in range(warm):  # imports and first queries out of the figures
            store.ingest("warm", content_hash=f"warm-{i}", fused=tiny, answer=answers[i], timezone="Europe/Berlin")
        profile, times = cProfile.Profile(), []
        for i in range(warm, warm + args.ingests):
            start = time.perf_counter()
            profile.enable()
            store.ingest("hour", content_hash=f"hour-{i}", fused=tiny, answer=answers[i], timezone="Europe/Berlin")
            profile.disable()
            times.append(time.perf_counter() - start)
        store.close()
    print(f"{args.ingests} single-hour ingests without the blob: median {1000 * np.median(times):.1f} ms "
          "(under the profiler)")
    pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
