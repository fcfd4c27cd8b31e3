"""The summary-step fine-tune: its data (disjoint from the bench, targets, skipped draws) and a
short run on a tiny random model that lowers the held-out summary loss."""
import json
import random

import pytest
import torch

from longcat.bench.heavy import EVAL_N, EVAL_SEED
from longcat.heavy.candidates import Candidate
from longcat.heavy.train_summary import (SummaryTuneConfig, bench_prompts, summary_examples, train_summary,
                                         training_problems)
from longcat.tasks.arith import make_problems


def test_training_problems_are_disjoint_from_the_bench():
    cfg = SummaryTuneConfig(max_operand=20, eval_max_operand=9, n_problems=800)
    train, holdout = training_problems(cfg)
    bench = {p.prompt for p in make_problems(EVAL_N, seed=EVAL_SEED, max_operand=9, ops="+-")}
    prompts = [p.prompt for p in train + holdout]
    assert len(prompts) == len(set(prompts)) and train and holdout
    assert not set(prompts) & bench and not set(prompts) & bench_prompts(9)
    assert not {p.prompt for p in train} & {p.prompt for p in holdout}


def test_summary_examples_targets_and_skips():
    problems = make_problems(2, seed=5, max_operand=9)
    right, wrong = str(problems[0].answer), str(problems[0].answer + 1)
    cands = [[Candidate(right), Candidate(wrong), Candidate("x", finish_reason="length")],
             [Candidate(str(problems[1].answer + 3))]]
    pairs, skipped = summary_examples(problems, cands, 20, 8, "skip", random.Random(0))
    assert pairs and all(t == right and right in p.split("=", 1)[1] for p, t in pairs)
    assert all(p.startswith(problems[0].prompt + "[") and p.endswith("]=") and "[x]" not in p for p, _ in pairs)
    assert skipped >= 20  # every draw of problem 1 (no right candidate), some of problem 0
    truth, skipped = summary_examples(problems, cands, 20, 8, "truth", random.Random(0))
    assert skipped == 0 and len(truth) == 40 and (problems[1].prompt + f"[{problems[1].answer + 3}]=",
                                                  str(problems[1].answer)) in truth
    with pytest.raises(ValueError, match="when_absent"):
        summary_examples(problems, cands, 1, 8, "vote", random.Random(0))


def test_bad_config():
    with pytest.raises(ValueError, match="SummaryTuneConfig.steps"):
        SummaryTuneConfig(steps=0)
    with pytest.raises(ValueError, match="SummaryTuneConfig.when_absent"):
        SummaryTuneConfig(when_absent="majority")
    with pytest.raises(ValueError, match="SummaryTuneConfig.task_max_operand"):
        SummaryTuneConfig(task_max_operand=0)
    with pytest.raises(ValueError, match="SummaryTuneConfig.summary_fraction"):
        SummaryTuneConfig(summary_fraction=1.5)


def test_fine_tune_lowers_the_summary_loss(tmp_path, fake):
    from longcat.models.random_init import init_checkpoint

    torch.set_num_threads(1)
    base = init_checkpoint(tmp_path / "base", preset="tiny", seed=0)
    before_weights = (base / "model.safetensors").read_bytes()
    # A random model never answers right, so a scripted policy stands in for its samples: right for
    # even sample indices, off by one or two otherwise.
    policy = fake(lambda prompt, i, r: str(eval(prompt[:-1]) + (0 if i % 2 == 0 else i % 3 + 1)))
    cfg = SummaryTuneConfig(steps=30, batch_size=16, lr=3e-3, n_problems=60, samples_per_problem=4,
                            max_candidates=4, holdout_fraction=0.2)
    with pytest.raises(ValueError, match="base_model"):
        train_summary(tmp_path / "nothing", tmp_path / "out", cfg, log=None, backend=policy)
    record = train_summary(base, tmp_path / "out", cfg, log=None, backend=policy)
    assert all(r.n == 4 and r.temperature == 1.0 for r in policy.requests)
    assert record["loss_after"]["summary"] < 0.8 * record["loss_before"]["summary"]
    assert record["heldout_summary_examples"] > 0 and record["summary_examples"] > 0
    saved = json.loads((tmp_path / "out" / "summary_tune.json").read_text())
    assert saved["config"]["steps"] == 30 and (tmp_path / "out" / "tokenizer.json").is_file()
    assert (base / "model.safetensors").read_bytes() == before_weights  # the base checkpoint is untouched


def test_cli_bad_input(tmp_path, capsys):
    from longcat.cli import main

    assert main(["heavy-train-summary", "--model", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "base_model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["heavy-train-summary", "--model", "m", "--out", "o", "--when-absent", "vote"])


def test_worked_targets_and_config_checks():
    from longcat.tasks.arith import worked_answer

    problems = make_problems(3, seed=7, max_operand=9, n_terms=3)
    cands = [[Candidate(worked_answer(p.prompt)), Candidate("1-1=0")] for p in problems]
    pairs, _ = summary_examples(problems, cands, 5, 2, "skip", random.Random(0), answer_format="worked")
    targets = {p.prompt: worked_answer(p.prompt) for p in problems}
    assert pairs and all(t == targets[prompt.split("[")[0]] and "=" in t for prompt, t in pairs)
    with pytest.raises(ValueError, match="SummaryTuneConfig.answer_format"):
        SummaryTuneConfig(answer_format="boxed")
    with pytest.raises(ValueError, match="SummaryTuneConfig.ops"):
        SummaryTuneConfig(answer_format="worked", ops="+-*")
    with pytest.raises(ValueError, match="SummaryTuneConfig.temperature"):
        SummaryTuneConfig(temperature=-1.0)


def test_task_only_fine_tune_samples_nothing(tmp_path):
    from longcat.models.random_init import init_checkpoint

    class NoSampling:
        def sample(self, requests):
            raise AssertionError("a task-only fine-tune must not sample candidates")

    torch.set_num_threads(1)
    base = init_checkpoint(tmp_path / "base", preset="tiny", seed=0)
    cfg = SummaryTuneConfig(steps=25, batch_size=16, lr=3e-3, n_problems=60, summary_fraction=0.0, n_terms=3,
                            answer_format="worked")
    record = train_summary(base, tmp_path / "out", cfg, log=None, backend=NoSampling())
    assert record["summary_examples"] == 0 and record["own_accuracy"] is None
    assert record["loss_before"]["summary"] is None and record["loss_after"]["task"] < record["loss_before"]["task"]
