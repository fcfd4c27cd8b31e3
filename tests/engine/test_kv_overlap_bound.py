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
    # 0.42 GB through a 42 GB/s memory system take >= 10 ms: nothing of 5 ms + 5 ms can be
    # hidden; 0.294 GB take >= 7 ms: at most 60%.
    hidden_max, why = overlap_bound(5e-3, 5e-3, 5e-3, 5e-3, cores_got=2.0, bytes_both=420e6, bw_all=42e9, bw_one=30e9)
    assert hidden_max == pytest.approx(0.0) and why == "420 MB through a 42 GB/s memory system"
    assert overlap_bound(5e-3, 5e-3, 5e-3, 5e-3, 2.0, 294e6, 42e9, 30e9)[0] == pytest.approx(0.6)
    # Fewer bytes than the longer side needs alone: no floor from the memory system.
    assert overlap_bound(5e-3, 4e-3, 5e-3, 4e-3, 2.0, 100e6, 42e9, 30e9) == (pytest.approx(1.0),
                                                                             "the shorter fully hidden")
    # A floor longer than the two sides one after the other: the bandwidth was measured low.
    hidden_max, why = overlap_bound(5e-3, 5e-3, 5e-3, 5e-3, 2.0, 600e6, 42e9, 30e9)
    assert hidden_max == pytest.approx(1.0) and "would take longer than compute and transfer" in why
    # An all-thread bandwidth no higher than one thread's was measured under other load: no bound from it.
    hidden_max, why = overlap_bound(5e-3, 5e-3, 5e-3, 5e-3, 2.0, 420e6, 20e9, 30e9)
    assert hidden_max == pytest.approx(1.0) and "no bandwidth bound" in why


@pytest.mark.parametrize("at", range(8))
def test_nan_propagates(at):
    args = [5.0, 4.0, 5.0, 4.0, 2.0, 300e6, 42e9, 30e9]
    args[at] = float("nan")
    assert math.isnan(overlap_bound(*args)[0])
