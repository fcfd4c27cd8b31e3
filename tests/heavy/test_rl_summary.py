"""RL on the summary step: the candidate bank, the summary prompts the RL loop trains on (the
decoder's own layout), the recipe checks, and two loop steps on a tiny random checkpoint."""
import json
import random

import pytest
import torch

from longcat.heavy import Candidate, HeavyThinker
from longcat.heavy.rl_summary import SummarySource, load_bank
from longcat.rl.recipe import load_recipe
from longcat.rl.tasks import arith_tokenizer
from longcat.tasks.arith import make_problems, parse_answer, worked_answer


def _bank(path, n=20):
    rng = random.Random(0)
    with open(path, "w") as f:
        for p in make_problems(n, seed=3, max_operand=9, n_terms=3):
            right = worked_answer(p.prompt)
            cands = [right if rng.random() < 0.5 else right[:-1] + str(rng.randint(0, 9)) for _ in range(6)]
            f.write(json.dumps({"prompt": p.prompt, "answer": p.answer, "candidates": cands}) + "\n")
    return path


def test_source_is_deterministic_and_renders_like_the_decoder(tmp_path):
    bank = load_bank(_bank(tmp_path / "candidates.jsonl"))
    tok = arith_tokenizer()
    source = SummarySource(tok, bank, seed=1, ks=(2, 4))
    (problem, ids), again = source.get(5), source.get(5)
    assert (problem, ids) == again and source.get(6) != (problem, ids)
    text = tok.decode(ids)
    assert text.startswith(problem.prompt + "[") and text.endswith("]=")
    shown = text[len(problem.prompt) + 1:-2].split("][")
    assert len(shown) in (2, 4)
    answers = dict((p.prompt, c) for p, c in bank)[problem.prompt]
    assert all(s in answers for s in shown)
    # The decoder renders the same candidates into the same prompt (layout and order aside from the shuffle).
    heavy = HeavyThinker(None, k=len(shown), template="compact", answer_fn=parse_answer, shuffle=False)
    from longcat.heavy.candidates import select_for_summary

    sel = select_for_summary([Candidate(s) for s in shown], per_candidate_budget=64, total_budget=256, count_tokens=len)
    assert heavy.summary_prompt(problem.prompt, sel.shown) == text


def test_bad_bank_and_recipe(tmp_path):
    with pytest.raises(ValueError, match="candidates: expected a candidates.jsonl"):
        load_bank(tmp_path / "none.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "1+2+3="}\n')
    with pytest.raises(ValueError, match="line 1"):
        load_bank(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"prompt": "1+2+3=", "answer": 6, "candidates": []}\n')
    with pytest.raises(ValueError, match="no problem with a candidate"):
        load_bank(empty)
    with pytest.raises(ValueError, match="ks"):
        SummarySource(arith_tokenizer(), load_bank(_bank(tmp_path / "c.jsonl")), ks=(0,))
    with pytest.raises(ValueError, match="task.candidates"):
        load_recipe({"task": {"name": "arith", "candidates": "x.jsonl"}})
    with pytest.raises(ValueError, match="warm_start.steps"):
        load_recipe({"task": {"name": "arith-summary"}, "warm_start": {"steps": 5}})
    assert load_recipe("rl/arith-summary.yaml").task.name == "arith-summary"
    assert load_recipe("rl/arith-choose.yaml").task.template == "choose"


def test_two_rl_steps_on_summary_prompts(tmp_path):
    from longcat.models.random_init import init_checkpoint
    from longcat.rl import train

    torch.set_num_threads(1)
    ckpt = init_checkpoint(tmp_path / "init", "tiny", seed=0)
    _bank(ckpt / "candidates.jsonl")  # found next to the checkpoint
    seen = []
    tok = arith_tokenizer()

    async def reward(task, sample):  # a random model never answers right: reward the parity of the length
        seen.append((task, tok.decode(sample.prompt_ids)))
        return float(len(sample.completion_ids) % 2)

    recipe = {"name": "t", "task": {"name": "arith-summary"}, "model": {"checkpoint": str(ckpt)},
              "rollout": {"group_size": 4, "max_new_tokens": 4, "max_concurrent": 4},
              "train": {"steps": 2, "batch_groups": 2, "lr": 1e-4, "checkpoint_every": 2}}
    res = train(recipe, str(tmp_path / "run"), progress=False, reward_fn=reward)
    assert res.steps == 2 and seen
    assert all(text.startswith(task.prompt + "[") and text.endswith("]=") for task, text in seen)
