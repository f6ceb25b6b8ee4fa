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
    chain = Chain(switch_probability, k)
    forward = np.empty_like(p)
    forward[0] = chain.first(p[0])
    for t in range(1, n):
        forward[t] = chain.forward(forward[t - 1], p[t])
    return chain.posteriors(forward, p)


class Chain:
    """The smoother's Markov chain over K activities: stay with 1 - s, switch to each other one with s / (K - 1)."""

    def __init__(self, switch_probability: float, k: int):
        self.k = k
        self.stay, self.move = 1.0 - switch_probability, switch_probability / (k - 1)

    def step(self, previous: np.ndarray) -> np.ndarray:  # previous @ transition, without the K x K matrix
        return (self.stay - self.move) * previous + self.move * previous.sum()

    def first(self, p: np.ndarray) -> np.ndarray:
        return p / p.sum()

    def forward(self, previous: np.ndarray, p: np.ndarray) -> np.ndarray:
        alpha = self.step(previous) * p
        return alpha / alpha.sum()  # normalised every step: no underflow over an hour of windows

    def posteriors(self, forward: np.ndarray, p: np.ndarray) -> np.ndarray:
        """Posteriors of the last len(forward) windows of a run that ends with them: their forward messages, and the
        backward pass from the run's end (which reads only these windows' evidence `p`)."""
        backward = np.ones_like(p)
        for t in range(len(p) - 2, -1, -1):
            beta = self.step(backward[t + 1] * p[t + 1])
            backward[t] = beta / beta.sum()
        posterior = forward * backward
        return posterior / posterior.sum(axis=1, keepdims=True)

    def matrix(self) -> np.ndarray:
        return (self.stay - self.move) * np.eye(self.k) + self.move


class RunSmoother:
    """`hmm_posteriors` labels of a run whose windows arrive one at a time, each given as soon as no continuation of
    the run can change it.

    A window's posterior is its forward message (the past) times its backward message (the future). Whatever the
    windows after the newest are, the newest window's backward message lies in the cone spanned by the columns of
    the transition matrix (the run ending there is one point of it: all ones); each older window's lies in that
    cone carried back through the windows between. A label is decided when it is the same at every generator of
    its cone: the decision (top-1 at or above the threshold, else uncertain) is linear in the backward message,
    so it then holds on the whole cone, whatever comes. A small margin leaves knife-edge cases to the run's end,
    where the posteriors are those of `hmm_posteriors` exactly (the same forward and backward passes).
    """

    MARGIN = 1e-9

    def __init__(self, switch_probability: float, k: int, threshold: float):
        self.chain, self.threshold = Chain(switch_probability, k), float(threshold)
        self.last_forward: np.ndarray | None = None
        self.pending: list[dict] = []  # windows not decided yet, in order: forward message, evidence, generators

    def add(self, p: np.ndarray) -> None:
        """The next window of the run: its calibrated probabilities [K]."""
        p = np.asarray(p, dtype=np.float64)
        chain = self.chain
        forward = chain.first(p) if self.last_forward is None else chain.forward(self.last_forward, p)
        self.last_forward = forward
        carry = p[:, None] * chain.matrix()  # the older windows' cones, carried back through this window
        for window in self.pending:
            generators = window["generators"] @ carry
            window["generators"] = generators / generators.max()  # one scale for all: the cone stays the same
        self.pending.append({"forward": forward, "p": p, "generators": chain.matrix()})

    def decided(self) -> list[int | None]:
        """The labels now decided, of the oldest pending windows in order (an activity's index, None: uncertain)."""
        labels = []
        while self.pending:
            label = self._decision(self.pending[0])
            if label is False:
                break
            labels.append(label)
            self.pending.pop(0)
        return labels

    def end(self) -> np.ndarray:
        """The run is over: the posteriors [pending, K] of the windows still pending (then none is)."""
        if not self.pending:
            return np.empty((0, self.chain.k))
        forward = np.array([w["forward"] for w in self.pending])
        posteriors = self.chain.posteriors(forward, np.array([w["p"] for w in self.pending]))
        self.pending, self.last_forward = [], None
        return posteriors

    def _decision(self, window: dict):
        """The label every generator of the window's cone gives (index or None for uncertain), or False if they differ."""
        posterior = window["forward"][:, None] * window["generators"]  # one column per generator
        posterior = posterior / posterior.sum(axis=0, keepdims=True)
        top = posterior.argmax(axis=0)
        best = posterior.max(axis=0)
        if (best < self.threshold * (1 - self.MARGIN)).all():
            return None
        runner_up = np.sort(posterior, axis=0)[-2]
        if (top == top[0]).all() and (best >= self.threshold * (1 + self.MARGIN)).all() \
                and (best > runner_up * (1 + self.MARGIN)).all():
            return int(top[0])
        return False


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

