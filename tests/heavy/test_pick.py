"""The ``pick`` summary layout: the summary names a shown answer by number and the decoder copies it."""
import random

import pytest

from longcat.heavy import HeavyThinker
from longcat.heavy.templates import PICK, ShownCandidate, get_template
from longcat.heavy.train_summary import SummaryTuneConfig, summary_examples
from longcat.tasks.arith import ArithProblem, parse_answer


def shown(*answers):
    return [ShownCandidate(a) for a in answers]


def test_pick_renders_a_tally_numbers_it_and_resolves_numbers():
    cands = shown("8-3=5", "9-3=6", "9-3=6", "9-3=7")
    assert get_template("pick") is PICK
    assert PICK.render("4+5-3=", cands) == "4+5-3=[9-3=6*2][8-3=5*1][9-3=7*1]="  # ties keep the shown order
    assert PICK.label(cands, "9-3=6") == "1" and PICK.label(cands, "9-3=7") == "3"
    assert PICK.label(cands, "10-3=7") is None
    assert PICK.resolve("2", cands) == "8-3=5" and PICK.resolve(" 3", cands) == "9-3=7"
    for bad in ("0", "4", "", "x", "-1", "1-"):
        assert PICK.resolve(bad, cands) is None
    # "*" and brackets inside an answer would break the numbering the model reads: dropped.
    assert PICK.render("1+1=", shown("[2*]")) == "1+1=[2*1]="


def test_decoder_copies_the_picked_answer_and_counts_its_tokens(fake):
    # Candidate i answers "9-3=6" for i < 2 else "8-3=5"; the summary picks number 2 (the minority).
    be = fake(lambda prompt, i, r: "2" if prompt.endswith("]=") else ("9 - 3 = 6" if i < 2 else "8 - 3 = 5"))
    heavy = HeavyThinker(be, k=3, template="pick", answer_fn=parse_answer, seed=0)
    res = heavy.think("4+5-3=")
    assert res.answer_text == "8 - 3 = 5" and res.answer == 5
    assert be.requests[-1].prompt == "4+5-3=[9 - 3 = 6*2][8 - 3 = 5*1]="
    # 3 candidates x 5 tokens, then the summary's 1 token plus the 5 it copies
    assert res.generated_tokens == 15 + 1 + 5
    assert res.episodes[0].completion == "2" and res.num_unresolved == 0


def test_a_pick_that_names_no_shown_answer_is_unresolved_and_unanswered(fake):
    be = fake(lambda prompt, i, r: "7" if prompt.endswith("]=") else "19")
    res = HeavyThinker(be, k=2, template="pick", answer_fn=parse_answer).think("12+7=")
    assert res.answer is None and res.num_unresolved == 1
    assert res.generated_tokens == 2 + 1  # nothing copied


def test_pick_rounds_feed_copied_answers_to_the_next_round(fake):
    be = fake(lambda prompt, i, r: "1" if prompt.endswith("]=") else str(19 + (i % 2)))
    res = HeavyThinker(be, k=2, rounds=2, template="pick", answer_fn=parse_answer).think("12+7=")
    assert [c.text for c in res.rounds[1]] in (["19", "19"], ["20", "20"])
    assert be.requests[-1].prompt in ("12+7=[19*2]=", "12+7=[20*2]=")
    assert res.answer in (19, 20)


def test_pick_training_targets_are_numbers_of_fully_right_answers():
    problems = [ArithProblem("4+5-3=", 6), ArithProblem("1+1+1=", 3)]
    # "8-2=6" has the right result but a wrong first step: never a pick target.
    cands = [[_c("9-3=6"), _c("8-3=5"), _c("8-2=6")], [_c("3+1=4"), _c("2+1=4")]]
    pairs, skipped = summary_examples(problems, cands, 40, 3, "skip", random.Random(0), PICK, "worked")
    assert pairs and skipped > 0
    for prompt, label in pairs:
        assert prompt.startswith("4+5-3=[")  # the second problem never shows its right worked answer
        brackets = prompt[len("4+5-3=["):-2].split("][")  # "9-3=6*2", in the numbered order
        assert brackets[int(label) - 1].rsplit("*", 1)[0] == "9-3=6"
    assert any(label != "1" for _, label in pairs)  # the right one is not always the most frequent


def test_pick_config_only_skips_when_the_answer_is_absent():
    with pytest.raises(ValueError, match="when_absent"):
        SummaryTuneConfig(template="pick", when_absent="truth")
    assert SummaryTuneConfig(template="pick").template == "pick"


class _c:
    """A finished candidate's answer, as summary_examples reads it."""

    def __init__(self, text):
        self.answer_content, self.finished = text, True


def test_rl_pick_prompts_are_rewarded_on_the_answer_they_name():
    import asyncio
    from types import SimpleNamespace

    from longcat.heavy.rl_summary import PickedProblem, SummarySource
    from longcat.rl.tasks import ArithReward, arith_tokenizer

    tok = arith_tokenizer()
    bank = [(ArithProblem("4+5-3=", 6), ["9-3=6", "8-3=5", "8-3=5", "9-3=7"])]
    source = SummarySource(tok, bank, seed=0, template="pick", ks=(4,))
    problem, ids = source.get(0)
    assert isinstance(problem, PickedProblem)
    assert tok.decode(ids) == PICK.render("4+5-3=", problem.shown)
    reward = ArithReward(tok)
    right = PICK.label(problem.shown, "9-3=6")
    got = {label: asyncio.run(reward(problem, SimpleNamespace(completion_ids=tok(label)["input_ids"])))
           for label in ("1", "2", "3", "4")}
    assert got == {label: float(label == right) for label in got}
    assert right != "1"  # "8-3=5" is the majority: a vote would be wrong here


def test_bench_counts_picks_that_overrule_the_most_frequent_answer(fake):
    from longcat.bench.heavy import evaluate
    from longcat.tasks.arith import make_problems

    def respond(prompt, i, req):
        question, _, tally = prompt.partition("[")
        truth = eval(question[:-1])
        if not tally:
            return str(truth + (i % 4 != 0) * 5)  # three of four samples wrong, all the same way
        numbered = [b.rsplit("*", 1)[0] for b in tally[:-2].split("][")]
        return str(numbered.index(str(truth)) + 1) if str(truth) in numbered else "1"

    problems = make_problems(5, seed=0, max_operand=9)
    rows = evaluate(fake(respond), problems, vote_ks=(1, 4), heavy_ks=(4,), heavy_rounds=(1,), logprobs=1,
                    template="pick")
    heavy = next(r for r in rows if r["method"] == "heavy")
    sc = next(r for r in rows if r["method"] == "self-consistency")
    assert heavy["accuracy"] == 1.0 and sc["accuracy"] == 0.0
    assert heavy["picked_not_first"] == 5 and heavy["unresolved"] == 0
    assert heavy["gen_tokens"] == sc["gen_tokens"] + 2  # the number, then the copied one-token answer


def test_choice_constraint_masks_every_token_that_leaves_the_choices():
    import torch

    from longcat.heavy.backends import ChoiceConstraint

    con = ChoiceConstraint([[5, 6, 7], [5, 8]], eos=2)
    logits = torch.arange(10, dtype=torch.float32)
    first = con([], logits.clone())
    assert torch.isfinite(first).nonzero().flatten().tolist() == [5] and first[5] == 5.0
    assert torch.isfinite(con([5], logits.clone())).nonzero().flatten().tolist() == [6, 8]
    assert torch.isfinite(con([5, 8], logits.clone())).nonzero().flatten().tolist() == [2]  # then EOS
    nan = torch.full((10,), float("nan"))
    assert torch.isnan(con([], nan)[5])  # NaN scores pass through
    with pytest.raises(ValueError, match="choices"):
        ChoiceConstraint([], eos=2)
    with pytest.raises(ValueError, match="choices"):
        ChoiceConstraint([[1], []], eos=2)
    with pytest.raises(ValueError, match="eos"):
        ChoiceConstraint([[1]], eos=None)


def test_choose_layout_puts_the_tally_first_and_constrains_the_summary(fake):
    from longcat.heavy.templates import CHOOSE

    cands = shown("8-3=5", "9-3=6", "9-3=6")
    assert CHOOSE.render("4+5-3=", cands) == "[9-3=6*2][8-3=5*1]4+5-3="
    assert CHOOSE.choices(cands) == ["9-3=6", "8-3=5"] and CHOOSE.constrains and not CHOOSE.copies
    be = fake(lambda prompt, i, r: "8-3=5" if prompt.startswith("[") else ("9-3=6" if i else "8-3=5"))
    res = HeavyThinker(be, k=3, template="choose", answer_fn=parse_answer).think("4+5-3=")
    summary = be.requests[-1]
    assert summary.prompt == "[9-3=6*2][8-3=5*1]4+5-3=" and summary.choices == ["9-3=6", "8-3=5"]
    assert all(r.choices is None for r in be.requests[:-1])  # candidates sample freely
    assert res.answer == 5 and res.generated_tokens == 3 + 1


def test_choose_training_targets_are_the_right_shown_answer_only():
    from longcat.heavy.templates import CHOOSE

    problems = [ArithProblem("4+5-3=", 6)]
    cands = [[_c("9-3=6"), _c("8-3=5"), _c("8-2=6")]]
    pairs, skipped = summary_examples(problems, cands, 30, 3, "skip", random.Random(0), CHOOSE, "worked")
    assert pairs and skipped > 0 and all(t == "9-3=6" for _, t in pairs)
    assert all(p.endswith("]4+5-3=") and "[9-3=6*" in p for p, _ in pairs)
