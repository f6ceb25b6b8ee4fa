"""What every benchmark script shares: the median wall time of repeated runs, and how results are reported."""
import statistics
import time
from pathlib import Path

from har.config import write_json

METRICS = Path(__file__).resolve().parent.parent / "metrics"


def median_seconds(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def report(result: dict, name: str) -> None:
    """Print the figures one per line and write them to metrics/bench_<name>.json."""
    width = max(map(len, result)) + 2
    for key, value in result.items():
        print(f"{key:{width}s} {value}")
    write_json(METRICS / f"bench_{name}.json", result)
