"""Can the model learn to copy? The ``tiny`` preset against a plain PyTorch transformer of the
same width, depth and head count, trained side by side on the induction task (a random 24-token
sequence, then the same sequence again; the loss is taken on the repeat, where chance is ln 500 =
6.21 nats). Copying an id from the user or a tool result into the next call is what the demo's
agent most often gets wrong; a model that cannot learn this task in a few hundred steps will not
learn it from the SFT data in the demo's budget either.

Two tasks, each trained from fresh weights: ``adjacent``, the repeat right after the sequence, and
``gap``, the repeat after 0-24 other random tokens (drawn per step). The adjacent repeat is solved
by attending a fixed distance back, a purely positional pattern; only the gapped one needs the
content-matching (induction) pattern that copying an id from the user or a tool result needs.

Both models start from random weights (seed 0), see the same batches (16 sequences a step),
train with AdamW at the same learning rate (3e-3 unless ``longcat bench copy_learning --lr``) in
float32 on the process's torch threads (the JSON records how many), and the table gives each
one's loss every ``every`` steps with the seconds it took. ``--optimizer muon`` trains every 2-D
weight matrix (the attention and MLP projections; not the embeddings, the output head or the
router) with ``torch.optim.Muon`` at 10x that rate and the rest with AdamW; ``--steps`` sets how
many steps (300 by default). A third row trains the preset with transformers' init
(``init_scheme="normal"``, every matrix ~ N(0, 0.02)), the ablation that shows what the presets'
``fan_in`` init fixes."""
from __future__ import annotations

import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from longcat.bench.common import BenchResult, machine_info

HALF, BATCH, LOW, HIGH = 24, 16, 100, 600
MAX_GAP = 24
TASKS = ("adjacent", "gap")
OPTIMIZERS = ("adamw", "muon")
MUON_LR_RATIO = 10.0  # Muon's rate on the matrices over AdamW's (measured: 5e-3 with 5e-4)


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


def _repeat_loss(logits: torch.Tensor, ids: torch.Tensor, start: int = HALF) -> torch.Tensor:
    """Cross entropy of the repeat's tokens (it begins at ``start``) after its first one, each
    predictable by copying."""
    return F.cross_entropy(logits[:, start:start + HALF - 1].reshape(-1, logits.shape[-1]).float(),
                           ids[:, start + 1:start + HALF].reshape(-1))


def _batch(task: str, gen: torch.Generator) -> tuple[torch.Tensor, int]:
    """Token ids [BATCH, 2 * HALF (+ MAX_GAP for "gap")] and where the repeat begins."""
    half = torch.randint(LOW, HIGH, (BATCH, HALF), generator=gen)
    if task == "adjacent":
        return torch.cat([half, half], 1), HALF
    gap = int(torch.randint(0, MAX_GAP + 1, (1,), generator=gen))
    fill = torch.randint(LOW, HIGH, (BATCH, MAX_GAP), generator=gen)
    return torch.cat([half, fill[:, :gap], half, fill[:, gap:]], 1), HALF + gap


class _Optimizers:
    """Several optimizers stepped as one."""

    def __init__(self, *opts):
        self.opts = opts

    def zero_grad(self):
        for o in self.opts:
            o.zero_grad()

    def step(self):
        for o in self.opts:
            o.step()


def make_optimizer(model: nn.Module, optimizer: str, lr: float):
    """AdamW over every parameter, or Muon (at ``MUON_LR_RATIO * lr``) over the 2-D weight
    matrices and AdamW over the rest: embeddings and the output head (whose rows are per token),
    the MoE router (rows per expert), norms, biases and 3-D expert weights."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {optimizer!r}")
    if optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr)
    not_muon = {id(p) for name, mod in model.named_modules()
                if isinstance(mod, nn.Embedding) or name in ("lm_head", "head") for p in mod.parameters()}
    not_muon |= {id(p) for name, p in model.named_parameters() if "router" in name}
    matrices = [p for p in model.parameters() if p.dim() == 2 and id(p) not in not_muon]
    chosen = {id(p) for p in matrices}
    rest = [p for p in model.parameters() if id(p) not in chosen]
    return _Optimizers(torch.optim.Muon(matrices, lr=MUON_LR_RATIO * lr), torch.optim.AdamW(rest, lr=lr))


def run(device: str = "cpu", quick: bool = False, preset: str = "tiny", lr: float = 3e-3,
        optimizer: str = "adamw", steps: int | None = None) -> BenchResult:
    from longcat.models import LongcatFlashForCausalLM
    from longcat.models.config import LongcatFlashConfig

    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {optimizer!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps: expected an int >= 1, got {steps!r}")
    every = 20 if quick else 50
    steps = steps if steps is not None else (40 if quick else 300)
    cfg = LongcatFlashConfig.from_preset(preset)
    normal_cfg = LongcatFlashConfig.from_preset(preset, init_scheme="normal")
    builders = {f"longcat {preset} ({cfg.init_scheme} init)": lambda: LongcatFlashForCausalLM(cfg, dtype=torch.float32),
                f"longcat {preset} (normal init, std {cfg.initializer_range:g})":
                    lambda: LongcatFlashForCausalLM(normal_cfg, dtype=torch.float32),
                "plain transformer": lambda: PlainTransformer(cfg.vocab_size, cfg.hidden_size, cfg.num_layers,
                                                              cfg.num_attention_heads, cfg.ffn_hidden_size,
                                                              2 * HALF + MAX_GAP)}
    models = {}
    with torch.random.fork_rng(devices=[]):
        for task in TASKS:
            for name, build in builders.items():
                torch.manual_seed(0)
                models[task, name] = build()
    opts = {k: make_optimizer(m, optimizer, lr) for k, m in models.items()}
    result = BenchResult(
        area="copy_learning",
        title=f"Learning to copy (induction, chance {torch.log(torch.tensor(float(HIGH - LOW))):.2f} nats): "
              f"{preset} vs a plain transformer, {optimizer} at lr {lr:g}"
              + (f" (Muon {MUON_LR_RATIO * lr:g} on the matrices)" if optimizer == "muon" else "")
              + f", batch {BATCH}; 'gap': the repeat after 0-{MAX_GAP} other tokens",
        columns=["task", "model", "params", "step", "loss", "seconds"],
        context={"machine": machine_info(device), "threads": torch.get_num_threads(), "optimizer": optimizer,
                 "lr": lr, "steps": steps})
    gens = {task: torch.Generator().manual_seed(0) for task in TASKS}
    spent = {k: 0.0 for k in models}
    for step in range(steps + 1):
        batches = {task: _batch(task, gens[task]) for task in TASKS}
        for (task, name), model in models.items():
            ids, start = batches[task]
            t = time.perf_counter()
            loss = _repeat_loss(model(ids), ids, start)
            if step < steps:
                opts[task, name].zero_grad()
                loss.backward()
                opts[task, name].step()
            spent[task, name] += time.perf_counter() - t
            if step % every == 0 or step == steps:
                result.add(task=task, model=name, params=sum(p.numel() for p in model.parameters()), step=step,
                           loss=float(loss.detach()), seconds=spent[task, name])
    return result


def main(argv: list[str] | None = None) -> None:
    from longcat.cli import main as cli_main

    cli_main(["bench", "copy_learning", *(argv or [])])
