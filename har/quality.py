"""Subject-level plausibility check of labelled recordings: is the watch really on the wrist?

In WISDM, subjects 1637-1640 move normally in the leg activities (walking, jogging, stairs)
but hardly at all in the hand ones: clapping, brushing teeth and folding clothes show a
tenth of everyone else's motion. That is what a sensor in a pocket would record, not a
watch, so their labels cannot teach the model anything about hands. Such subjects are
found without looking at the model: each recording's motion (the standard deviation of
each sensor's axes) is compared with the median of all subjects for the same activity,
and a subject whose typical ratio is far below 1 is set aside and reported.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def sensor_motion(values: np.ndarray) -> tuple[float, float]:
    """(accelerometer, gyroscope) motion of one recording [n, 6]: the mean standard deviation of each triad's axes."""
    sd = np.asarray(values, dtype=np.float64).std(axis=0)
    return float(sd[:3].mean()), float(sd[3:6].mean())


def subject_motion_ratio(motion: pd.DataFrame) -> pd.Series:
    """Per subject, the median over its recordings and both sensors of motion / the activity's median.

    `motion` has one row per recording: subject, activity, acc, gyr. 1.0 is a typical subject;
    the ratio is taken per activity, so sitting still is compared only with sitting.
    """
    ratios = []
    for sensor in ("acc", "gyr"):
        typical = motion.groupby("activity")[sensor].transform("median")
        # An activity in which nobody moves says nothing about anybody: left out, not divided by 0.
        ratio = (motion[sensor] / typical.where(typical > 0)).dropna()
        ratios.append(pd.DataFrame({"subject": motion.loc[ratio.index, "subject"], "ratio": ratio}))
    return pd.concat(ratios).groupby("subject")["ratio"].median().rename("motion_ratio")


def implausible_subjects(ratio: pd.Series, min_motion_ratio: float | None) -> list[str]:
    """Subjects whose motion ratio is below the threshold (none when the check is off)."""
    if min_motion_ratio is None:
        return []
    return sorted(str(s) for s in ratio.index[ratio < min_motion_ratio])
