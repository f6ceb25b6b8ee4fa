"""Smoothing a timeline: activities last minutes, windows last seconds.

A hidden Markov model over consecutive windows: each window's hidden state is the activity, the
model's calibrated probabilities are the evidence, and from one window to the next the activity
stays with probability 1 - s or switches to any other with probability s / (K - 1). The
forward-backward pass gives each window's posterior: the probability of each activity given the
whole run of windows, which is again a probability the abstention threshold can judge. s is
chosen on the validation subjects (stages/evaluate.py); s = 0 turns smoothing off.

Runs are smoothed separately: a gap in the data or a non-wear episode ends one.
"""
from __future__ import annotations

import numpy as np


def hmm_posteriors(probabilities: np.ndarray, switch_probability: float) -> np.ndarray:
    """Posterior activity probabilities [n, K] of one run of consecutive windows (uniform start)."""
    p = np.asarray(probabilities, dtype=np.float64)
    n, k = p.shape
    if n == 0 or switch_probability <= 0 or k < 2:
        return p.copy()
    stay, move = 1.0 - switch_probability, switch_probability / (k - 1)

    def step(previous: np.ndarray) -> np.ndarray:  # previous @ transition, without the K x K matrix
        return (stay - move) * previous + move * previous.sum()

    forward = np.empty_like(p)
    forward[0] = p[0] / p[0].sum()
    for t in range(1, n):
        alpha = step(forward[t - 1]) * p[t]
        forward[t] = alpha / alpha.sum()  # normalised every step: no underflow over an hour of windows
    backward = np.ones_like(p)
    for t in range(n - 2, -1, -1):
        beta = step(backward[t + 1] * p[t + 1])
        backward[t] = beta / beta.sum()
    posterior = forward * backward
    return posterior / posterior.sum(axis=1, keepdims=True)


def runs(start_s: np.ndarray, window_step_s: float) -> list[np.ndarray]:
    """Index arrays of consecutive windows: a new run starts wherever the step between starts is not the usual one."""
    start_s = np.asarray(start_s, dtype=np.float64)
    if len(start_s) == 0:
        return []
    breaks = np.flatnonzero(~np.isclose(np.diff(start_s), window_step_s)) + 1
    return np.split(np.arange(len(start_s)), breaks)


def smooth(probabilities: np.ndarray, start_s: np.ndarray, window_step_s: float,
           switch_probability: float) -> np.ndarray:
    """Posteriors for windows in time order, each run of consecutive windows smoothed on its own."""
    smoothed = np.asarray(probabilities, dtype=np.float64).copy()
    for index in runs(start_s, window_step_s):
        smoothed[index] = hmm_posteriors(smoothed[index], switch_probability)
    return smoothed


def episode_count(labels: np.ndarray) -> int:
    """Runs of equal consecutive labels: how fragmented a timeline is."""
    labels = np.asarray(labels)
    return int(len(labels) > 0) + int(np.sum(labels[1:] != labels[:-1]))


def day_like_order(subject: np.ndarray, recording: np.ndarray, start_s: np.ndarray, seed: int) -> list[np.ndarray]:
    """Per subject, the window indices of their recordings one after another in a seeded random order.

    Labelled recordings hold one activity each; chained like this they give sequences with real
    transitions, on which a smoother can be judged honestly (it cannot just assume one activity).
    """
    rng = np.random.default_rng(seed)
    sequences = []
    for person in np.unique(subject):
        recordings = rng.permutation(np.unique(recording[subject == person]))
        sequences.append(np.concatenate([
            np.flatnonzero(recording == r)[np.argsort(start_s[recording == r], kind="stable")] for r in recordings]))
    return sequences

