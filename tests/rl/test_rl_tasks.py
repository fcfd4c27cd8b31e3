import asyncio

import pytest

from longcat.rl.protocols import Sample
from longcat.rl.tasks import ArithReward, ArithSource, DelayedReward, arith_tokenizer


@pytest.fixture(scope="module")
def tok():
    return arith_tokenizer()


def test_tokenizer_is_one_id_per_character(tok):
    ids = tok("12+7=[19]")["input_ids"]
    assert len(ids) == 9 and tok.decode(ids) == "12+7=[19]"
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)


def test_source_is_a_function_of_the_uid(tok):
    a, b = ArithSource(tok, seed=4, max_operand=9), ArithSource(tok, seed=4, max_operand=9)
    assert [a.get(u) for u in (5, 0, 5)] == [b.get(5), b.get(0), b.get(5)]
    assert a.get(1) != a.get(2) or a.problem(1) == a.problem(2)


def test_reward_scores_the_decoded_completion(tok):
    src = ArithSource(tok, seed=0, max_operand=9)
    problem, prompt = src.get(3)
    right = Sample(prompt, tok(str(problem.answer))["input_ids"] + [2], [0.0], [0])
    wrong = Sample(prompt, tok(str(problem.answer + 1))["input_ids"], [0.0], [0])
    reward = ArithReward(tok)
    assert asyncio.run(reward(problem, right)) == 1.0 and asyncio.run(reward(problem, wrong)) == 0.0


def test_delays_are_heavy_tailed_and_capped():
    d = DelayedReward(None, scale=0.01, alpha=1.1, cap=1.0, seed=0)
    xs = sorted(d.delay() for _ in range(4000))
    assert xs[0] >= 0.01 and xs[-1] <= 1.0
    assert xs[len(xs) // 2] < 0.02 and xs[int(len(xs) * 0.99)] > 0.3  # median near scale, a long tail
    with pytest.raises(ValueError, match="scale"):
        DelayedReward(None, scale=0, alpha=1, cap=1)
