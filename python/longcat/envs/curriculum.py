"""Noise curriculum (report section 4.3): raise the environments' noise as the policy becomes
robust to it. Robustness is the gap between the success rate on clean episodes and on noisy
ones; when the gap has closed (at most ``close_gap``), the intensity goes up one step, and at the
top intensity the next noise type joins (intensity back to its start). A gap that opens wide
(more than ``backoff_gap``) steps the intensity back, so the tasks stay learnable. The output is
a ``longcat.envs.noise.NoiseConfig`` for the next episodes; the state round-trips through
``state_dict`` for lossless resume."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from longcat.envs.noise import NOISE_TYPES, NoiseConfig

# Mild noise first (typos, a transient tool failure), the confusing kinds later.
DEFAULT_ORDER = ("typos", "transient", "paraphrase", "truncated", "irrelevant", "paginated", "malformed",
                 "out_of_order", "renamed", "ambiguity", "user_turns", "inconsistent", "stale",
                 "silent_noop")


@dataclass
class NoiseCurriculum:
    order: Sequence[str] = DEFAULT_ORDER
    start_intensity: float = 0.1
    max_intensity: float = 0.6
    step: float = 0.1
    close_gap: float = 0.05
    backoff_gap: float = 0.3
    ema: float = 0.5          # weight of the newest measurement in the running success rates
    min_updates: int = 3      # measurements between two changes
    seed: int = 0

    def __post_init__(self):
        self.order = tuple(self.order)
        bad = [t for t in self.order if t not in NOISE_TYPES]
        if bad or not self.order:
            raise ValueError(f"NoiseCurriculum.order: expected a non-empty list of {list(NOISE_TYPES)}, got {bad or []}")
        if not 0 <= self.start_intensity <= self.max_intensity <= 1:
            raise ValueError(f"NoiseCurriculum: expected 0 <= start_intensity <= max_intensity <= 1, got "
                             f"{self.start_intensity}, {self.max_intensity}")
        for name in ("step", "ema"):
            v = getattr(self, name)
            if not 0 < v <= 1:
                raise ValueError(f"NoiseCurriculum.{name}: expected a number in (0, 1], got {v!r}")
        if not 0 <= self.close_gap < self.backoff_gap:
            raise ValueError(f"NoiseCurriculum: expected 0 <= close_gap < backoff_gap, got {self.close_gap}, "
                             f"{self.backoff_gap}")
        self.n_types = 1
        self.intensity = self.start_intensity
        self.clean = self.noisy = None
        self.since_change = 0
        self.history: list[dict] = []

    @property
    def gap(self) -> float | None:
        return None if self.clean is None else self.clean - self.noisy

    def noise_config(self) -> NoiseConfig:
        return NoiseConfig(types=self.order[:self.n_types], intensity=round(self.intensity, 6), seed=self.seed)

    def update(self, clean_success: float, noisy_success: float) -> NoiseConfig:
        """One measurement (success rates in [0, 1] of recent clean and noisy episodes); returns
        the noise for the next episodes."""
        for name, v in (("clean_success", clean_success), ("noisy_success", noisy_success)):
            if not 0 <= v <= 1:
                raise ValueError(f"NoiseCurriculum.update: '{name}' must be in [0, 1], got {v!r}")
        a = self.ema
        self.clean = clean_success if self.clean is None else a * clean_success + (1 - a) * self.clean
        self.noisy = noisy_success if self.noisy is None else a * noisy_success + (1 - a) * self.noisy
        self.since_change += 1
        if self.since_change >= self.min_updates:
            if self.gap <= self.close_gap:
                self._harder()
            elif self.gap > self.backoff_gap and self.intensity > self.start_intensity:
                self.intensity = max(self.start_intensity, self.intensity - self.step)
                self.since_change = 0
        self.history.append({"clean": self.clean, "noisy": self.noisy, "types": self.n_types,
                             "intensity": self.intensity})
        return self.noise_config()

    def _harder(self) -> None:
        if self.intensity + self.step <= self.max_intensity + 1e-9:
            self.intensity += self.step
        elif self.n_types < len(self.order):
            self.n_types += 1
            self.intensity = self.start_intensity
        else:
            return  # everything on at the top intensity
        self.since_change = 0
        self.clean = self.noisy = None  # measurements of the old level say nothing about the new one

    def state_dict(self) -> dict:
        return {"n_types": self.n_types, "intensity": self.intensity, "clean": self.clean, "noisy": self.noisy,
                "since_change": self.since_change}

    def load_state_dict(self, state: dict) -> None:
        self.n_types, self.intensity = state["n_types"], state["intensity"]
        self.clean, self.noisy, self.since_change = state["clean"], state["noisy"], state["since_change"]
