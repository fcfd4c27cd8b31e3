import itertools

import pytest

from longcat.rl.budget import PassRates, allocate, informative_prob, oversampling, task_value


def test_values_by_hand():
    assert informative_prob(0.5, 2) == pytest.approx(0.5)
    assert task_value(0.5, 1, 2) == pytest.approx(0.25 * 0.5)
    assert task_value(0.5, 2, 2) == pytest.approx(0.25 * 0.75)
    assert task_value(0.0, 3, 4) == 0 and task_value(1.0, 3, 4) == 0


def test_greedy_matches_brute_force():
    rates = {"a": 0.5, "b": 0.1, "c": 0.95, "d": 0.0}
    for budget in range(0, 7):
        got = allocate(rates, budget, group_size=4)
        best = max(sum(task_value(rates[t], k, 4) for t, k in zip(rates, ks))
                   for ks in itertools.product(range(budget + 1), repeat=4) if sum(ks) <= budget)
        assert sum(task_value(rates[t], k, 4) for t, k in got.items()) == pytest.approx(best)
        assert got["d"] == 0 and sum(got.values()) <= budget


def test_cap_per_task_and_oversampling():
    assert allocate({"a": 0.5, "b": 0.5}, 10, 4, max_groups_per_task=2) == {"a": 2, "b": 2}
    assert oversampling(0.5, 8) == pytest.approx(1 / (1 - 2 * 0.5 ** 8))
    assert oversampling(0.01, 4, max_factor=4.0) == 4.0


def test_pass_rates_track_recent_results():
    r = PassRates(decay=0.5)
    assert r.rate("t") == 0.5
    r.update("t", [1, 1, 1, 1])
    assert r.rate("t") == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="decay"):
        PassRates(decay=0)
