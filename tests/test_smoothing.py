"""The timeline smoother (har/smoothing.py) against brute force, and the day-like sequences it is judged on."""
import itertools

import numpy as np
import pytest

from har.smoothing import day_like_order, episode_count, hmm_posteriors, runs, smooth


def brute_force_posteriors(p: np.ndarray, s: float) -> np.ndarray:
    """Every path of states enumerated: P(path) ∝ Π emission · Π transition, with a uniform start."""
    n, k = p.shape
    posterior = np.zeros((n, k))
    for path in itertools.product(range(k), repeat=n):
        weight = np.prod([p[t, state] for t, state in enumerate(path)])
        weight *= np.prod([(1 - s) if a == b else s / (k - 1) for a, b in zip(path, path[1:])])
        for t, state in enumerate(path):
            posterior[t, state] += weight
    return posterior / posterior.sum(axis=1, keepdims=True)


def test_forward_backward_equals_enumerating_every_path():
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(3), size=5)
    np.testing.assert_allclose(hmm_posteriors(p, 0.1), brute_force_posteriors(p, 0.1), atol=1e-12)


def test_a_lone_doubtful_window_takes_its_neighbours_activity_and_off_changes_nothing():
    p = np.array([[0.8, 0.2]] * 5 + [[0.4, 0.6]] + [[0.8, 0.2]] * 5)
    assert hmm_posteriors(p, 0.01).argmax(1).tolist() == [0] * 11
    np.testing.assert_array_equal(hmm_posteriors(p, 0.0), p)
    # A real change of activity survives: ten windows of each.
    change = np.array([[0.8, 0.2]] * 10 + [[0.2, 0.8]] * 10)
    assert episode_count(hmm_posteriors(change, 0.01).argmax(1)) == 2


def test_runs_end_at_gaps_and_are_smoothed_apart():
    start = np.array([0.0, 2.0, 4.0, 10.0, 12.0])
    assert [r.tolist() for r in runs(start, 2.0)] == [[0, 1, 2], [3, 4]]
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.45, 0.55], [0.45, 0.55]])
    # Across the gap the confident run would pull the second one over; apart, it keeps its own answer.
    assert smooth(p, start, 2.0, 0.01).argmax(1).tolist() == [0, 0, 0, 1, 1]


def test_day_like_sequences_chain_each_subjects_recordings_in_a_seeded_order():
    subject = np.array(["a"] * 6 + ["b"] * 2)
    recording = np.array(["a1", "a1", "a2", "a2", "a3", "a3", "b1", "b1"])
    start = np.array([2.0, 0.0, 0.0, 2.0, 0.0, 2.0, 0.0, 2.0])
    first = day_like_order(subject, recording, start, seed=0)
    assert [sorted(seq.tolist()) for seq in first] == [[0, 1, 2, 3, 4, 5], [6, 7]]
    for seq in first:  # each recording whole and in time order
        chained = recording[seq]
        assert episode_count(chained) == len(np.unique(chained))
        for r in np.unique(chained):
            assert np.all(np.diff(start[seq][chained == r]) > 0)
    assert all(np.array_equal(a, b) for a, b in zip(first, day_like_order(subject, recording, start, seed=0)))
    orders = {tuple(recording[day_like_order(subject, recording, start, seed=k)[0]][::2]) for k in range(10)}
    assert len(orders) > 1  # the seed decides the order


@pytest.mark.parametrize("labels, count", [([], 0), (["a"], 1), (["a", "a", "b", "a"], 3)])
def test_episode_count(labels, count):
    assert episode_count(np.array(labels)) == count
