"""bench kv's overlap bound: what the cores the process got and the memory system allow."""
import math

import pytest

from longcat.bench.kv import overlap_bound


def test_two_free_cores_allow_hiding_all_of_the_shorter():
    hidden_max, why = overlap_bound(5.0, 4.0, 5.0, 4.0, cores_got=2.0)
    assert hidden_max == pytest.approx(1.0) and why == "the shorter fully hidden"


def test_fewer_cores_bound_the_overlap():
    # Both CPU-bound, 5 + 5 CPU seconds on 1.6 cores: overlapped >= 6.25 s, hidden <= 75%.
    hidden_max, why = overlap_bound(5.0, 5.0, 5.0, 5.0, cores_got=1.6)
    assert hidden_max == pytest.approx(0.75) and "cores got 1.60" in why
    # One core: nothing can be hidden.
    assert overlap_bound(5.0, 5.0, 5.0, 5.0, cores_got=1.0)[0] == pytest.approx(0.0)
    # A compute that needs no core (a sleep) is bounded only by the copy's core.
    assert overlap_bound(5.0, 5.0, 0.0, 5.0, cores_got=1.0)[0] == pytest.approx(1.0)


def test_shared_memory_bandwidth_bounds_two_streams():
    # Each alone at 30 GB/s, both at most 42: overlapped >= 10 * 30 / 42 s, hidden <= 2 - 2 / 1.4.
    hidden_max, why = overlap_bound(5.0, 5.0, 5.0, 5.0, cores_got=2.0, bw1=30.0, bw2=42.0)
    assert hidden_max == pytest.approx(2 - 2 / 1.4) and "copy bandwidth 30 GB/s on 1 thread, 42 on all" in why
    # An all-thread bandwidth no higher than one thread's was measured under other load: no bound from it.
    hidden_max, why = overlap_bound(5.0, 5.0, 5.0, 5.0, cores_got=2.0, bw1=30.0, bw2=20.0)
    assert hidden_max == pytest.approx(1.0) and "no bandwidth bound" in why


@pytest.mark.parametrize("at", range(7))
def test_nan_propagates(at):
    args = [5.0, 4.0, 5.0, 4.0, 2.0, 30.0, 42.0]
    args[at] = float("nan")
    assert math.isnan(overlap_bound(*args)[0])
