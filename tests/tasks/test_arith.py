import pytest

from longcat.tasks import make_problems, parse_answer, score


def test_problems_are_deterministic_and_correct():
    a = make_problems(50, seed=3, ops="+-*", n_terms=3)
    assert a == make_problems(50, seed=3, ops="+-*", n_terms=3)
    assert a != make_problems(50, seed=4, ops="+-*", n_terms=3)
    for p in a:
        assert p.prompt.endswith("=")
        assert eval(p.prompt[:-1]) == p.answer


@pytest.mark.parametrize("text,want", [
    ("19", 19), (" 19\n", 19), ("-4", -4), ("<think>7+12 is 19, not 18</think>19", 19),
    ("<think>maybe 3</think>the answer is 42.", 42), ("<think>never closed 5", None), ("no digits", None),
    ("", None),
])
def test_parse_answer(text, want):
    assert parse_answer(text) == want


def test_score():
    p = make_problems(1, seed=0)[0]
    assert score(str(p.answer), p) == 1.0
    assert score(str(p.answer + 1), p) == 0.0


@pytest.mark.parametrize("kw", [dict(n=-1), dict(n=1, max_operand=0), dict(n=1, n_terms=1), dict(n=1, ops="/"),
                                dict(n=1, ops="")])
def test_bad_arguments_name_themselves(kw):
    with pytest.raises(ValueError, match=next(k for k in kw if k != "n" or len(kw) == 1)):
        make_problems(**kw)


@pytest.mark.parametrize("prompt,want", [("4+5-3=", "9-3=6"), ("3-5+1=", "-2+1=-1"), ("12+7=", "19"),
                                         ("1-2-3-4=", "-1-3-4=-4-4=-8"), ("0-0+0", "0+0=0")])
def test_worked_answer_steps(prompt, want):
    from longcat.tasks.arith import worked_answer

    assert worked_answer(prompt) == want


def test_worked_answer_parses_to_the_answer_and_rejects_other_input():
    from longcat.tasks.arith import worked_answer

    for p in make_problems(300, seed=1, max_operand=50, n_terms=4):
        assert parse_answer(worked_answer(p.prompt)) == p.answer
    for bad in ("2*3+1=", "", "=", "4+=", "a+b="):
        with pytest.raises(ValueError, match="worked_answer: prompt"):
            worked_answer(bad)
