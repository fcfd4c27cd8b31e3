"""Can the model learn to copy? The ``tiny`` preset against a plain PyTorch transformer of the
same width, depth and head count, trained side by side on the induction task (a random 24-token
sequence, then the same sequence again; the loss is taken on the repeat, where chance is ln 500 =
6.21 nats). Copying an id from the user or a tool result into the next call is what the demo's
agent most often gets wrong; a model that cannot learn this task in a few hundred steps will not
learn it from the SFT data in the demo's budget either.

Both models start from random weights (seed 0), see the same batches (16 sequences a step),
train with AdamW at the same learning rate in float32 and one torch thread, and the table gives
each one's loss every ``every`` steps with the seconds it took. A third row trains the preset with
transformers' init (``init_scheme="normal"``, every matrix ~ N(0, 0.02)), the ablation that
shows what the presets' ``fan_in`` init fixes."""
from __future__ import annotations

import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from longcat.bench.common import BenchResult, machine_info

HALF, BATCH, LOW, HIGH = 24, 16, 100, 600


class PlainTransformer(nn.Module):
    """Pre-norm causal transformer (learned positions) with the preset's width, depth and heads."""

    def __init__(self, vocab: int, hidden: int, layers: int, heads: int, ffn: int, max_len: int):
        super().__init__()
        self.embed, self.pos = nn.Embedding(vocab, hidden), nn.Embedding(max_len, hidden)
        layer = nn.TransformerEncoderLayer(hidden, heads, ffn, dropout=0.0, batch_first=True, norm_first=True)
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm, self.head = nn.LayerNorm(hidden), nn.Linear(hidden, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        S = ids.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(S)
        return self.head(self.norm(self.body(self.embed(ids) + self.pos(torch.arange(S)), mask=mask, is_causal=True)))


def _repeat_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Cross entropy of the repeat's tokens after its first one (each predictable by copying)."""
    return F.cross_entropy(logits[:, HALF:-1].reshape(-1, logits.shape[-1]).float(), ids[:, HALF + 1:].reshape(-1))


def run(device: str = "cpu", quick: bool = False, preset: str = "tiny", lr: float = 3e-3) -> BenchResult:
    from longcat.models import LongcatFlashForCausalLM
    from longcat.models.config import LongcatFlashConfig

    steps, every = (40, 20) if quick else (300, 50)
    cfg = LongcatFlashConfig.from_preset(preset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        longcat = LongcatFlashForCausalLM(cfg, dtype=torch.float32)
        torch.manual_seed(0)
        normal = LongcatFlashForCausalLM(LongcatFlashConfig.from_preset(preset, init_scheme="normal"),
                                         dtype=torch.float32)
        torch.manual_seed(0)
        plain = PlainTransformer(cfg.vocab_size, cfg.hidden_size, cfg.num_layers, cfg.num_attention_heads,
                                 cfg.ffn_hidden_size, 2 * HALF)
    models = {f"longcat {preset} ({cfg.init_scheme} init)": (longcat, lambda ids: longcat(ids)),
              f"longcat {preset} (normal init, std {cfg.initializer_range:g})": (normal, lambda ids: normal(ids)),
              "plain transformer": (plain, lambda ids: plain(ids))}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=lr) for k, (m, _) in models.items()}
    result = BenchResult(
        area="copy_learning",
        title=f"Learning to copy (induction, chance {torch.log(torch.tensor(float(HIGH - LOW))):.2f} nats): "
              f"{preset} vs a plain transformer, lr {lr:g}, batch {BATCH}",
        columns=["model", "params", "step", "loss", "seconds"],
        context={"machine": machine_info(device), "threads": torch.get_num_threads()})
    gen = torch.Generator().manual_seed(0)
    spent = {k: 0.0 for k in models}
    for step in range(steps + 1):
        half = torch.randint(LOW, HIGH, (BATCH, HALF), generator=gen)
        ids = torch.cat([half, half], 1)
        for name, (model, fwd) in models.items():
            t = time.perf_counter()
            loss = _repeat_loss(fwd(ids), ids)
            if step < steps:
                opts[name].zero_grad()
                loss.backward()
                opts[name].step()
            spent[name] += time.perf_counter() - t
            if step % every == 0:
                result.add(model=name, params=sum(p.numel() for p in model.parameters()), step=step,
                           loss=float(loss.detach()), seconds=spent[name])
    return result


def main(argv: list[str] | None = None) -> None:
    from longcat.cli import main as cli_main

    cli_main(["bench", "copy_learning", *(argv or [])])
