"""What an RL user watches: one JSONL row per trainer step, TensorBoard scalars when
``tensorboard`` is installed, a rich progress line, and PNG plots at the end."""
from __future__ import annotations

import json
import os



class MetricsLog:
    def __init__(self, out_dir: str, tensorboard: bool = True):
        os.makedirs(out_dir, exist_ok=True)
        self.out_dir = out_dir
        self.path = os.path.join(out_dir, "metrics.jsonl")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(os.path.join(out_dir, "tensorboard"))
            except ImportError:  # optional: JSONL is the record
                self._tb = None

    def write(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
                    self._tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_plots(rows: list[dict], out_dir: str, prefix: str = "") -> list[str]:
    """reward.png (reward per step and over time), staleness.png (histogram over all trained
    samples), throughput.png (samples/s and tokens/s per step); returns the paths."""
    if not rows:
        return []
    os.makedirs(out_dir, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    reward = [r["reward"] for r in rows]
    window = max(1, min(10, len(rows) // 5))
    smooth = [sum(reward[max(0, i - window + 1):i + 1]) / len(reward[max(0, i - window + 1):i + 1])
              for i in range(len(reward))]
    for a, x, label in ((ax[0], steps, "trainer step"), (ax[1], [r["elapsed_s"] for r in rows], "seconds")):
        a.plot(x, reward, marker=".", alpha=0.35, label="per step")
        a.plot(x, smooth, label=f"mean of last {window}")
        a.set_xlabel(label)
    ax[0].set_ylabel("mean reward (all scored samples)")
    ax[0].legend()
    fig.tight_layout()
    paths.append(_save(fig, out_dir, prefix + "reward.png"))
    hist: dict[int, int] = {}
    for r in rows:
        for k, v in r.get("staleness_hist", {}).items():
            hist[int(k)] = hist.get(int(k), 0) + v
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar(list(hist), list(hist.values()))
    ax.set_xlabel("staleness (trainer version - sample version)")
    ax.set_ylabel("samples trained")
    fig.tight_layout()
    paths.append(_save(fig, out_dir, prefix + "staleness.png"))
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    ax[0].plot(steps, [r["samples_per_s"] for r in rows])
    ax[0].set_ylabel("samples/s")
    ax[1].plot(steps, [r["tokens_per_s"] for r in rows])
    ax[1].set_ylabel("generated tokens/s")
    for a in ax:
        a.set_xlabel("trainer step")
    fig.tight_layout()
    paths.append(_save(fig, out_dir, prefix + "throughput.png"))
    plt.close("all")
    return paths


def _save(fig, out_dir, name) -> str:
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=90)
    return path


class Progress:
    """A rich progress bar with the run's live numbers (plain lines when rich is missing or off)."""

    def __init__(self, total: int, enabled: bool = True, start: int = 0):
        self._bar = None
        self._task = None
        if enabled:
            try:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, \
                    TimeElapsedColumn
            except ImportError:
                return
            self._bar = RichProgress(TextColumn("[bold]rl"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                     TextColumn("{task.fields[info]}"))
            self._task = self._bar.add_task("train", total=total, completed=start, info="")
            self._bar.start()

    def update(self, row: dict) -> None:
        if self._bar is None:
            return
        info = (f"reward {row['reward']:.3f}  staleness {row['staleness_mean']:.2f}  "
                f"{row['samples_per_s']:.1f} samples/s  {row['tokens_per_s']:.0f} tok/s")
        self._bar.update(self._task, completed=row["step"], info=info)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
