"""Heavy Thinking against its baselines on ``longcat.tasks.arith``, same model, same samples:
accuracy vs generated tokens per problem for a single sample, self-consistency (majority vote),
DeepConf-style confidence-weighted voting and Heavy Thinking at K = 2, 4, 8 with 1 and 2 summary
rounds, plus one greedy answer per problem as a peer. Every method reads the same first K of the Kmax candidates sampled once per problem, so
the comparison isolates the aggregation; Heavy Thinking pays for its summary tokens on top.

The model: ``--model PATH`` (e.g. the checkpoint ``rl/arith-tiny.yaml`` trains), else a short
supervised warm start of the ``tiny`` preset (``longcat.heavy.warmstart``), cached under the
output folder (the first run trains it: about 21 minutes on the loaded 2-core CPU this was written
on; later runs reuse it). With ``--model`` the task family and the summary layout come from the
checkpoint's ``summary_tune.json`` when ``longcat heavy-train-summary`` wrote one (operands up to
its ``eval_max_operand``, its ``n_terms`` and ``template``), else operands up to 99, two terms,
the compact layout; ``$LONGCAT_HEAVY_MAX_OPERAND``, ``$LONGCAT_HEAVY_N_TERMS`` and
``$LONGCAT_HEAVY_TEMPLATE`` override either; ``$LONGCAT_HEAVY_TEMPERATURE`` sets the candidates'
sampling temperature (default: the one the summary was tuned on, else 1.0; the same for every method).
``--summary-model PATH`` runs the summary step on a separate policy (its own weights, e.g. a
``heavy-train-summary --summary-fraction 1`` checkpoint tuned from the candidate model), so tuning
the summary cannot cost the candidates' task skill; the family and layout then come from that
checkpoint's ``summary_tune.json`` when it has one.
Each heavy row is compared with self-consistency at equal tokens per problem (paired), with a
standard error and a bootstrap interval, so a win can be told from noise. With the ``pick`` layout
each heavy row also counts the summaries that did not pick the most frequent answer
(``picked_not_first``) and those that named no shown answer (``unresolved``). Writes heavy.json /
heavy.md (``report``) and heavy.png.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Optional, Sequence

from longcat.bench.common import BenchResult, finish_plot, machine_info
from longcat.heavy import HeavyThinker, SampleRequest, confidence_vote, majority_vote
from longcat.heavy.warmstart import WarmStartConfig, warm_start
from longcat.tasks.arith import make_problems, parse_answer

# The warm start the bench trains when no --model is given (single-digit +/-, task + summary step).
WARM_START = WarmStartConfig(steps=120, batch_size=32, lr=5e-3, max_operand=9)
# The evaluation problems: ``make_problems(n, seed=EVAL_SEED, ...)`` (the quick run's 48 are the
# first 48 of the full run's 200). ``longcat.heavy.train_summary`` keeps its training problems out of them.
EVAL_SEED = 2026
EVAL_N, EVAL_N_QUICK = 600, 48
COLUMNS = ["method", "k", "rounds", "accuracy", "stderr", "gen_tokens", "sc_acc_at_equal_tokens", "delta_vs_sc",
           "delta_se", "delta_ci95", "delta_vs_sc_more_tokens", "seconds"]
BOOTSTRAP_RESAMPLES = 2000


def _log_weights(xs: Sequence[float], x: float) -> tuple[int, int, float]:
    """(i, j, t): ``x`` lies between sorted ``xs[i]`` and ``xs[j]`` at fraction ``t`` in log scale
    (flat outside: i == j)."""
    if x <= xs[0]:
        return 0, 0, 0.0
    for i in range(len(xs) - 1):
        if x <= xs[i + 1]:
            return i, i + 1, (math.log(x) - math.log(xs[i])) / (math.log(xs[i + 1]) - math.log(xs[i]))
    return len(xs) - 1, len(xs) - 1, 0.0


def interp_log(points: Sequence[tuple[float, float]], x: float) -> float:
    """Linear interpolation of sorted (tokens, accuracy) points in log(tokens); flat outside."""
    i, j, t = _log_weights([p[0] for p in points], x)
    return points[i][1] + t * (points[j][1] - points[i][1])


def paired_delta(correct: Sequence[bool], baseline: Sequence[float], seed: int = 0) -> dict:
    """Mean of ``correct - baseline`` per problem, its standard error and a paired bootstrap 95%
    interval (problems resampled with replacement, ``BOOTSTRAP_RESAMPLES`` times)."""
    import numpy as np

    d = np.asarray(correct, dtype=float) - np.asarray(baseline, dtype=float)
    n = len(d)
    means = d[np.random.default_rng(seed).integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return {"delta": float(d.mean()), "se": float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0,
            "ci95": (float(lo), float(hi))}


def _row(method, k, rounds, correct: list[bool], tokens: list[int], seconds: float) -> dict:
    n = len(correct)
    acc = sum(correct) / n
    return {"method": method, "k": k, "rounds": rounds, "accuracy": acc,
            "stderr": math.sqrt(acc * (1 - acc) / n), "gen_tokens": sum(tokens) / n, "seconds": seconds,
            "_correct": [bool(c) for c in correct]}


def compare_to_sc(rows: list[dict]) -> None:
    """Adds to each heavy and confidence-vote row its paired comparison with self-consistency at
    equal generated tokens: per problem, the SC curve (single sample and SC at each K, same
    candidates) interpolated in log tokens at the row's token count; ``delta_vs_sc`` with its
    standard error and bootstrap interval. ``delta_vs_sc_more_tokens``: against the cheapest SC
    row that spends at least as many tokens (no interpolation; None when none does)."""
    sc = sorted((r for r in rows if r["method"] in ("single", "self-consistency")), key=lambda r: r["gen_tokens"])
    xs = [r["gen_tokens"] for r in sc]
    for r in rows:
        if r["method"] not in ("heavy", "confidence-vote"):
            continue
        i, j, t = _log_weights(xs, r["gen_tokens"])
        baseline = [(1 - t) * a + t * b for a, b in zip(sc[i]["_correct"], sc[j]["_correct"])]
        p = paired_delta(r["_correct"], baseline)
        r["sc_acc_at_equal_tokens"] = sum(baseline) / len(baseline)
        r["delta_vs_sc"], r["delta_se"] = p["delta"], p["se"]
        r["delta_ci95"] = f"{p['ci95'][0]:+.3f}..{p['ci95'][1]:+.3f}"
        above = next((s for s in sc if s["gen_tokens"] >= r["gen_tokens"]), None)
        r["delta_vs_sc_more_tokens"] = None if above is None else r["accuracy"] - above["accuracy"]


def evaluate(backend, problems, *, vote_ks=(1, 2, 4, 8, 16), heavy_ks=(2, 4, 8), heavy_rounds=(1, 2),
             temperature: float = 1.0, max_tokens: int = 12, logprobs: int = 5, seed: int = 0,
             template: str = "compact", summary_backend=None) -> list[dict]:
    """Rows of the table (see module docstring) for ``problems`` on ``backend``; the heavy rows'
    summary step runs on ``summary_backend`` (a separate summary policy) when given, else on ``backend``."""
    kmax = max(max(vote_ks), max(heavy_ks))
    t0 = time.perf_counter()
    batches = backend.sample([SampleRequest(p.prompt, n=kmax, temperature=temperature, seed=seed + i,
                                            max_tokens=max_tokens, logprobs=logprobs)
                              for i, p in enumerate(problems)])
    sample_s = time.perf_counter() - t0
    cands = [b.candidates for b in batches]
    # A peer outside the sampled curves: one greedy answer per problem (what "no test-time
    # scaling" gets when sampling at T=1 costs accuracy).
    t0 = time.perf_counter()
    greedy = [b.candidates[0] for b in backend.sample([SampleRequest(p.prompt, n=1, temperature=0.0, seed=seed,
                                                                     max_tokens=max_tokens) for p in problems])]
    rows = [_row("single (greedy)", 1, 0, [g.finished and parse_answer(g.text) == p.answer
                                          for g, p in zip(greedy, problems)],
                 [g.num_tokens for g in greedy], time.perf_counter() - t0)]
    for k in vote_ks:
        tokens = [sum(c.num_tokens for c in cs[:k]) for cs in cands]
        share = sample_s * k / kmax  # the sampling time these k candidates took
        if k == 1:
            rows.append(_row("single", 1, 0, [parse_answer(cs[0].text) == p.answer if cs[0].finished else False
                                              for cs, p in zip(cands, problems)], tokens, share))
            continue
        rows.append(_row("self-consistency", k, 0, [majority_vote(cs[:k], parse_answer) == p.answer
                                                    for cs, p in zip(cands, problems)], tokens, share))
        rows.append(_row("confidence-vote", k, 0, [confidence_vote(cs[:k], parse_answer) == p.answer
                                                   for cs, p in zip(cands, problems)], tokens, share))
        rows.append(_row("pass@k (oracle)", k, 0, [any(parse_answer(c.text) == p.answer for c in cs[:k] if c.finished)
                                                   for cs, p in zip(cands, problems)], tokens, share))
    for k in heavy_ks:
        for rounds in heavy_rounds:
            heavy = HeavyThinker(backend, k=k, rounds=rounds, template=template, temperature=temperature,
                                 summary_temperature=0.0, seed=seed, max_tokens=max_tokens,
                                 summary_max_tokens=max_tokens, answer_fn=parse_answer, unfinished_ok=True,
                                 summary_backend=summary_backend)
            t0 = time.perf_counter()
            results = heavy.think_batch([p.prompt for p in problems], [cs[:k] for cs in cands])
            seconds = time.perf_counter() - t0 + sample_s * k / kmax
            row = _row("heavy", k, rounds, [r.answer == p.answer for r, p in zip(results, problems)],
                       [r.generated_tokens for r in results], seconds)
            row["all_unparseable"] = sum(r.all_unparseable for r in results)
            if heavy.config.template.copies:  # how often the pick overruled the most frequent answer
                row["picked_not_first"] = sum(r.episodes[-1].completion.strip() != "1" for r in results)
                row["unresolved"] = sum(r.num_unresolved for r in results)
            rows.append(row)
    compare_to_sc(rows)
    return rows


def task_family(model: str) -> dict:
    """The arith family and summary layout to evaluate ``model`` on: the checkpoint's
    ``summary_tune.json`` when present, else 2 terms with operands <= 99 in the compact layout;
    ``$LONGCAT_HEAVY_MAX_OPERAND`` / ``$LONGCAT_HEAVY_N_TERMS`` / ``$LONGCAT_HEAVY_TEMPLATE`` override."""
    family = {"max_operand": 99, "n_terms": 2, "template": "compact", "temperature": 1.0}
    record = os.path.join(model, "summary_tune.json")
    if os.path.isfile(record):
        with open(record) as f:
            cfg = json.load(f)["config"]
        family = {"max_operand": cfg["eval_max_operand"], "n_terms": cfg.get("n_terms", 2),
                  "template": cfg.get("template", "compact"), "temperature": cfg.get("temperature", 1.0)}
    for key, env in (("max_operand", "LONGCAT_HEAVY_MAX_OPERAND"), ("n_terms", "LONGCAT_HEAVY_N_TERMS")):
        if os.environ.get(env):
            family[key] = int(os.environ[env])
    family["template"] = os.environ.get("LONGCAT_HEAVY_TEMPLATE") or family["template"]
    if os.environ.get("LONGCAT_HEAVY_TEMPERATURE"):
        family["temperature"] = float(os.environ["LONGCAT_HEAVY_TEMPERATURE"])
    if not 0.0 < family["temperature"] <= 2.0:
        raise ValueError(f"LONGCAT_HEAVY_TEMPERATURE: expected a number in (0, 2], got {family['temperature']}")
    return family


def plot(rows: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = [("self-consistency", None, "o-"), ("confidence-vote", None, "s--"), ("pass@k (oracle)", None, ":"),
              ("heavy", 1, "^-"), ("heavy", 2, "v-")]
    single = [r for r in rows if r["method"] == "single"]
    for method, rounds, style in series:
        pts = [r for r in rows if r["method"] == method and (rounds is None or r["rounds"] == rounds)]
        if method in ("self-consistency", "confidence-vote", "pass@k (oracle)"):
            pts = single + pts
        pts.sort(key=lambda r: r["gen_tokens"])
        label = method if rounds is None else f"heavy, {rounds} round{'s' if rounds > 1 else ''}"
        ax.plot([r["gen_tokens"] for r in pts], [r["accuracy"] for r in pts], style, label=label,
                color="gray" if "oracle" in method else None)
        for r in pts:
            if method == "heavy":
                ax.annotate(f"K={r['k']}", (r["gen_tokens"], r["accuracy"]), fontsize=7,
                            textcoords="offset points", xytext=(3, -9))
    for r in rows:
        if r["method"] == "single (greedy)":
            ax.plot([r["gen_tokens"]], [r["accuracy"]], "k*", markersize=9, label="single, greedy (T=0)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("generated tokens per problem (candidates + summaries)")
    ax.set_ylabel("accuracy")
    finish_plot(fig, ax, title, path)


def run(device: str = "cpu", quick: bool = False, model: Optional[str] = None,
        out: Optional[str] = None, summary_model: Optional[str] = None) -> BenchResult:
    from longcat.heavy import EngineBackend

    out = out or os.environ.get("LONGCAT_BENCH_DIR", "bench-results")
    if summary_model is not None and not os.path.isfile(os.path.join(summary_model, "config.json")):
        raise ValueError(f"--summary-model: expected a checkpoint folder with config.json, got {summary_model!r}")
    if summary_model is not None and model is None:
        raise ValueError("--summary-model: expected --model too (the candidate policy), got only --summary-model")
    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()
    if model is None:
        model = str(warm_start(os.path.join(out, "heavy-warmstart"), WARM_START))
        model_note = f"tiny preset, supervised warm start {WARM_START} (cached in {model})"
        family = {"max_operand": WARM_START.max_operand, "n_terms": 2, "template": "compact", "temperature": 1.0}
    else:
        model_note = f"--model {model}"
        # The summary layout and candidate temperature are what the summary step was tuned on.
        tuned = summary_model if summary_model and os.path.isfile(os.path.join(summary_model, "summary_tune.json")) \
            else model
        family = task_family(tuned)
    setup_s = time.perf_counter() - t0
    backend = EngineBackend(model, max_num_seqs=256, max_model_len=128)
    summary_backend = None
    if summary_model is not None:
        summary_backend = EngineBackend(summary_model, max_num_seqs=256, max_model_len=128)
        model_note += f"; summary step: --summary-model {summary_model} (candidates from --model)"
    n = EVAL_N_QUICK if quick else EVAL_N
    problems = make_problems(n, seed=EVAL_SEED, max_operand=family["max_operand"], ops="+-",
                             n_terms=family["n_terms"])
    vote_ks, heavy_ks = ((1, 2, 4, 8), (2, 4, 8)) if quick else ((1, 2, 4, 8, 16), (2, 4, 8))
    temperature = family["temperature"]
    rows = evaluate(backend, problems, vote_ks=vote_ks, heavy_ks=heavy_ks, heavy_rounds=(1, 2),
                    template=family["template"], temperature=temperature, summary_backend=summary_backend)
    title = (f"Heavy Thinking vs voting on arith (+-, {family['n_terms']} terms, operands <= "
             f"{family['max_operand']}, {family['template']} summary layout, T={temperature:g}), {n} problems")
    result = BenchResult("heavy", title, COLUMNS)
    for r in rows:
        result.add(**{k: v for k, v in r.items() if k != "_correct"})
    heavy_rows = [r for r in rows if r["method"] == "heavy"]
    wins = [r for r in heavy_rows if r["delta_vs_sc"] > 0]
    clear = [r for r in heavy_rows if r["delta_vs_sc"] > 2 * r["delta_se"]]
    greedy_acc = next(r["accuracy"] for r in rows if r["method"] == "single (greedy)")
    result.context.update(machine=machine_info(device), model=model_note, family=family, problems=n,
                          model_setup_s=setup_s,
                          heavy_beats_sc_at_equal_tokens=f"{len(wins)} of {len(heavy_rows)} heavy settings",
                          heavy_beats_sc_by_2se=f"{len(clear)} of {len(heavy_rows)} heavy settings "
                                                "(paired standard error over problems)",
                          heavy_above_greedy_single=f"{sum(r['accuracy'] > greedy_acc for r in heavy_rows)} of "
                                                    f"{len(heavy_rows)} heavy settings (greedy: {greedy_acc:.3f})",
                          note=f"all methods read the same first K of Kmax candidates per problem (T={temperature:g}); "
                               "summary greedy; sc_acc_at_equal_tokens interpolates the self-consistency curve "
                               "(log tokens) at the row's token count, per problem; delta_se / delta_ci95: paired "
                               "standard error and bootstrap 95% interval of heavy minus that; "
                               "delta_vs_sc_more_tokens: against the cheapest SC row with at least as many tokens")
    png = os.path.join(out, "heavy.png")
    plot(rows, png, title)
    result.context["plot"] = png
    return result


def main(argv: list[str] | None = None) -> None:
    from longcat.cli import main as cli_main

    cli_main(["bench", "heavy", *(argv or [])])
