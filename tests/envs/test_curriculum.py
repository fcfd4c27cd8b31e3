import pytest

from longcat.envs.curriculum import NoiseCurriculum
from longcat.envs.noise import NoiseConfig


def test_closed_gap_raises_intensity_then_adds_a_type():
    c = NoiseCurriculum(order=("typos", "transient"), start_intensity=0.2, max_intensity=0.4, step=0.2,
                        min_updates=2)
    assert c.noise_config() == NoiseConfig(types=("typos",), intensity=0.2, seed=0)
    seen = [c.update(0.8, 0.79) for _ in range(2)]
    assert seen[0].intensity == 0.2 and seen[1].intensity == pytest.approx(0.4)
    for _ in range(2):
        cfg = c.update(0.8, 0.8)
    assert cfg.types == ("typos", "transient") and cfg.intensity == pytest.approx(0.2)
    for _ in range(8):
        cfg = c.update(0.8, 0.8)
    assert cfg.types == ("typos", "transient") and cfg.intensity == pytest.approx(0.4)  # the top: stays


def test_open_gap_holds_and_wide_gap_backs_off():
    c = NoiseCurriculum(order=("typos",), start_intensity=0.1, max_intensity=0.5, step=0.1, min_updates=1, ema=1.0)
    c.update(0.9, 0.9)
    c.update(0.9, 0.9)
    assert c.intensity == pytest.approx(0.3)
    c.update(0.9, 0.75)  # gap 0.15: hold
    assert c.intensity == pytest.approx(0.3)
    c.update(0.9, 0.4)  # gap 0.5: back off one step
    assert c.intensity == pytest.approx(0.2)


def test_state_round_trip_and_bad_input():
    c = NoiseCurriculum(min_updates=1)
    for _ in range(3):
        c.update(0.5, 0.5)
    d = NoiseCurriculum(min_updates=1)
    d.load_state_dict(c.state_dict())
    assert d.noise_config() == c.noise_config()
    with pytest.raises(ValueError, match="noisy_success"):
        c.update(0.5, 1.5)
    with pytest.raises(ValueError, match="order"):
        NoiseCurriculum(order=("loud",))


def test_default_order_reaches_every_noise_type_including_read_consistency():
    from longcat.envs.noise import NOISE_TYPES

    c = NoiseCurriculum(min_updates=1, ema=1.0)
    assert set(c.order) == set(NOISE_TYPES)
    for _ in range(200):
        cfg = c.update(0.9, 0.9)
    assert set(cfg.types) == set(NOISE_TYPES)
    assert cfg.read_types == ("inconsistent", "stale") and cfg.state_types == ("silent_noop",)
