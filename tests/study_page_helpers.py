"""A participant with many days in the study store, without scoring anything: for the study page's
benchmark and screenshot (bench/page.py, scripts/page_screenshot.py).

Each day is one recording of episodes laid out by a seeded generator (the store's own test answers,
tests/store_helpers.py, so the store reads them as it reads real ones): mostly worn, with a not-worn
stretch and a few uncertain minutes; every fifth day is short (an invalid day), and the first night
crosses midnight.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from store_helpers import answer, fused


def synthetic_episodes(rng: np.random.Generator, seconds: float, activities: list[str]) -> list[tuple[str, float, float]]:
    """(label, start_s, end_s) covering [0, seconds): activity runs of 2-20 min, one not-worn stretch, some uncertain."""
    episodes, at = [], 0.0
    desk_at = rng.uniform(0.3, 0.7) * seconds
    while at < seconds:
        if at <= desk_at < at + 1200:
            label, length = "not_worn", rng.uniform(1800, 5400)
        elif rng.random() < 0.08:
            label, length = "uncertain", rng.uniform(30, 240)
        else:
            label, length = str(rng.choice(activities)), rng.uniform(120, 1200)
        end = min(seconds, at + length)
        episodes.append((label, round(at, 3), round(end, 3)))
        at = end
    return episodes


def fill_participant(store, subject: str, *, days: int, activities: list[str], first_day: str = "2025-01-06",
                     timezone: str = "Europe/Berlin", seed: int = 0) -> list[dict]:
    """`days` local days of `subject` in `store`; returns what each ingest stored."""
    rng = np.random.default_rng(seed)
    stored = []
    for d in range(days):
        day = pd.Timestamp(first_day) + pd.Timedelta(days=d)
        if d == 0:  # the first night: from 21:30 across midnight
            start, seconds = day + pd.Timedelta(hours=21.5), 4.5 * 3600
        elif d % 5 == 4:  # a short day: not valid under any usual rule
            start, seconds = day + pd.Timedelta(hours=9), rng.uniform(3, 6) * 3600
        else:
            start, seconds = day + pd.Timedelta(hours=float(rng.uniform(5.5, 6.5))), rng.uniform(17.0, 18.0) * 3600
        episodes = synthetic_episodes(rng, seconds, activities)
        start_time = start.isoformat(timespec="milliseconds")
        content = hashlib.sha256(f"{subject}/{start_time}/{seed}".encode()).hexdigest()
        rec, _ = store.ingest(subject, content_hash=content, fused=fused(60, seed=d),
                              answer=answer(start_time, episodes, activities=activities, name=f"day{d:03d}"),
                              timezone=timezone)
        stored.append(rec)
    return stored
