"""Heavy Thinking on a scripted backend: what the summary sees, rounds, bad input, voting
baselines, the RL episodes, context memory and tool use."""
import pytest

from longcat.heavy import (COMPACT, BudgetError, Candidate, FunctionTools, HeavyChat, HeavyConfig, HeavyThinker,
                           confidence_vote, majority_vote, score_episodes, select_for_summary, strip_thinking,
                           trace_confidence)
from longcat.tasks.arith import make_problems, parse_answer, score


def words(text):
    return len(text.split())


@pytest.mark.parametrize("field,value", [("k", 0), ("k", -3), ("rounds", 0), ("max_tokens", 0),
                                         ("candidate_budget", 0), ("k", 2.5)])
def test_config_rejects_bad_values_naming_them(field, value):
    with pytest.raises(ValueError, match=field):
        HeavyConfig(**{field: value})


def test_config_context_budget_too_small_for_k():
    with pytest.raises(BudgetError, match="context_budget.*k=8"):
        HeavyConfig(k=8, context_budget=4)


def test_unknown_template_is_named():
    with pytest.raises(ValueError, match="template"):
        HeavyConfig(template="fancy")


def test_strip_thinking():
    assert strip_thinking("<think>a</think> 42 ") == "42"
    assert strip_thinking("<think>a</think>x<think>b</think>y") == "y"
    assert strip_thinking("<think>never closed") == ""
    assert strip_thinking(" plain ") == "plain"
    assert not Candidate("<think>never closed").finished
    assert not Candidate("42", finish_reason="length").finished
    assert Candidate("<think>a</think>42").finished


def test_select_drops_unfinished_shuffles_and_truncates_keeping_the_end():
    import random

    cands = [Candidate(f"<think>secret {i}</think>word " * 1 + f"answer{i}") for i in range(6)]
    cands += [Candidate("<think>unfinished"), Candidate("cut short", finish_reason="length")]
    sel = select_for_summary(cands, per_candidate_budget=100, total_budget=1000, count_tokens=words,
                             rng=random.Random(0))
    assert sel.num_dropped == 2
    assert sorted(s.answer for s in sel.shown) == sorted(f"word answer{i}" for i in range(6))
    assert [s.answer for s in sel.shown] != [f"word answer{i}" for i in range(6)]  # shuffled
    assert all("secret" not in s.answer for s in sel.shown)
    long = Candidate(" ".join(f"w{i}" for i in range(50)) + " final")
    sel = select_for_summary([long, Candidate("short")], per_candidate_budget=40, total_budget=10,
                             count_tokens=words)
    assert sel.num_truncated == 1
    assert sel.shown[0].answer.endswith("w49 final") and words(sel.shown[0].answer) <= 5


def test_summary_sees_answer_content_only_and_answers_in_normal_format(fake):
    def respond(prompt, i, req):
        if "Thinker" in prompt:
            return "<think>compare</think>The answer is 19."
        return ["<think>secret-a</think>19", "<think>secret-b</think>18", "<think>no end", "19"][i]

    backend = fake(respond)
    heavy = HeavyThinker(backend, k=4, answer_fn=parse_answer)
    res = heavy.think("12+7=")
    summary_prompt = backend.requests[-1].prompt
    assert "secret" not in summary_prompt and "no end" not in summary_prompt
    assert summary_prompt.count("# ----- Thinker #") == 3 and "12+7=" in summary_prompt
    assert backend.requests[0].n == 4 and backend.requests[-1].n == 1
    assert res.answer == 19 and res.answer_text == "The answer is 19."
    assert res.num_dropped == 1 and not res.all_unparseable
    assert res.generated_tokens == sum(c.num_tokens for r in res.rounds for c in r)


def test_all_unparseable_candidates_are_flagged_but_the_summary_answers(fake):
    backend = fake(lambda p, i, r: "7" if p.endswith("]=") else "I cannot tell")
    res = HeavyThinker(backend, k=3, template="compact", answer_fn=parse_answer).think("3+4=")
    assert res.all_unparseable and res.answer == 7


def test_all_candidates_cut_by_max_tokens_is_a_budget_error(fake):
    heavy = HeavyThinker(fake(lambda p, i, r: "1 2 3", finish="length"), k=3, max_tokens=3)
    with pytest.raises(BudgetError, match="max_tokens.*3"):
        heavy.think("q")
    # A benchmark asks to summarise anyway: the summary sees no candidate and the result is flagged.
    lenient = HeavyThinker(fake(lambda p, i, r: "1 2 3", finish="length"), k=3, max_tokens=3, template="compact",
                           unfinished_ok=True)
    res = lenient.think("3+4=")
    assert res.all_unparseable and res.num_dropped == 3 and res.answer is None  # the summary was cut too


def test_recursive_rounds_feed_summaries_back(fake):
    def respond(prompt, i, req):
        return f"s{prompt.count('[')}-{i}" if prompt.endswith("]=") else f"c{i}"

    backend = fake(respond)
    res = HeavyThinker(backend, k=3, rounds=2, template="compact").think("q=")
    assert [r.n for r in backend.requests] == [3, 3, 1]
    assert len(res.rounds) == 3 and len(res.rounds[1]) == 3 and len(res.rounds[2]) == 1
    round2_prompt = backend.requests[2].prompt
    assert all(f"[s3-{i}]" in round2_prompt for i in range(3))  # round 1's summaries are round 2's candidates
    assert len(res.episodes) == 4 and [e.round for e in res.episodes] == [1, 1, 1, 2]


def test_summary_episodes_carry_prompt_candidates_and_reward(fake):
    problems = make_problems(3, seed=1)
    backend = fake(lambda p, i, r: str(eval(p.split("[")[0][:-1])) if p.endswith("]=") else str(i))
    heavy = HeavyThinker(backend, k=2, template="compact", answer_fn=parse_answer)
    results = heavy.think_batch([p.prompt for p in problems])
    assert len(backend.requests) == 2 * len(problems)  # one batched call per stage
    for p, res in zip(problems, results):
        (ep,) = score_episodes(res.episodes, lambda text, p=p: score(text, p))
        assert ep.reward == 1.0 and ep.prompt.startswith(p.prompt) and sorted(ep.candidates) == ["0", "1"]
    wrong = score_episodes(results[0].episodes, lambda text: score(text, problems[1]))
    assert wrong[0].reward == 0.0 or problems[0].answer == problems[1].answer


def test_given_candidates_skip_the_width_stage(fake):
    backend = fake(lambda p, i, r: "5")
    cands = [Candidate("5", num_tokens=1), Candidate("6", num_tokens=1)]
    res = HeavyThinker(backend, k=2, template="compact", answer_fn=parse_answer).think("2+3=", cands)
    assert len(backend.requests) == 1 and res.generated_tokens == 3 and res.answer == 5


def test_majority_and_confidence_votes():
    flat, peaked = [[-0.1, -0.2]], [[-0.1, -9.9]]  # DeepConf confidence 0.15 vs 5.0
    cands = [Candidate("10", token_logprobs=flat), Candidate("10", token_logprobs=flat),
             Candidate("11", token_logprobs=peaked), Candidate("<think>x", token_logprobs=peaked),
             Candidate("nothing", token_logprobs=peaked)]
    assert majority_vote(cands, parse_answer) == 10
    assert trace_confidence(cands[2]) == pytest.approx(5.0)
    assert confidence_vote(cands, parse_answer, keep_fraction=1.0) == 11   # 5.0 outweighs 2 x 0.15
    assert confidence_vote(cands, parse_answer, keep_fraction=0.34) == 11  # only the most confident kept
    assert confidence_vote(cands[:2] + [Candidate("11", token_logprobs=flat)], parse_answer) == 10
    assert majority_vote([Candidate("x")], parse_answer) is None
    assert confidence_vote([Candidate("x", token_logprobs=flat)], parse_answer) is None
    with pytest.raises(ValueError, match="logprobs"):
        confidence_vote([Candidate("1")], parse_answer)
    with pytest.raises(ValueError, match="keep_fraction"):
        confidence_vote(cands, parse_answer, keep_fraction=0)


def test_trace_confidence_is_the_lowest_window():
    c = Candidate("1", token_logprobs=[[-1.0]] * 4 + [[-0.1]] * 4)
    assert trace_confidence(c, window=4) == pytest.approx(0.1)
    assert trace_confidence(c, window=100) == pytest.approx(0.55)


def test_chat_memory_keeps_only_summary_answers(fake):
    def respond(messages, i, req):
        last = messages[-1]["content"]
        if "Thinker" in last:
            return f"<think>summary reasoning</think>final {len(messages)}"
        return f"<think>cand thinking</think>cand {i}"

    backend = fake(respond)
    chat = HeavyChat(HeavyThinker(backend, k=2), system="be brief")
    chat.send("first question")
    chat.send("second question")
    roles = [m["role"] for m in chat.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    assert chat.messages[2]["content"] == "final 2" and chat.messages[4]["content"] == "final 4"
    second_width = backend.requests[2].prompt
    assert second_width[:3] == chat.messages[:3]  # candidates see the summary answer, nothing else
    assert not any("cand" in m["content"] or "think" in m["content"] for m in second_width)
    summary = backend.requests[3].prompt
    assert summary[:3] == chat.messages[:3] and "second question" in summary[3]["content"]
    with pytest.raises(ValueError, match="user"):
        chat.send("  ")


def test_candidates_call_tools_and_the_summary_sees_compact_results(fake):
    calls = []

    def add(a, b):
        calls.append((a, b))
        return {"sum": a + b}

    tools = FunctionTools({"add": add}, [{"type": "function", "function": {"name": "add", "parameters": {}}}])

    def respond(messages, i, req):
        last = messages[-1]
        if last["role"] == "tool":
            return f"It is {last['content']}."
        if "Thinker" in last["content"]:
            return "The sum is 5."
        if i == 0:
            return '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'
        if i == 1:
            return '<tool_call>\n{"name": "nope", "arguments": {}}\n</tool_call>'
        return "Probably 6."

    backend = fake(respond)
    chat = HeavyChat(HeavyThinker(backend, k=3), tools=tools)
    res = chat.send("What is 2+3?")
    assert calls == [(2, 3)]
    assert backend.requests[0].tools == tools.schemas
    summary = backend.requests[-1].prompt[-1]["content"]
    assert 'add({"a": 2, "b": 3}) -> {"sum": 5}' in summary and "unknown tool 'nope'" in summary
    assert "Probably 6." in summary and "tool_call" not in summary
    assert res.answer_text == "The sum is 5." and chat.messages[-1] == {"role": "assistant", "content": "The sum is 5."}
    assert [len(c.tool_results) for c in res.candidates] == [1, 1, 0]


def test_env_tools_give_each_candidate_its_own_database():
    from longcat.envs.growth import DomainContext, build_environment
    from longcat.envs.runtime import Environment
    from longcat.envs.tasks import SynthStats, synthesize_task
    from longcat.heavy import EnvTools

    ctx = DomainContext("retail")
    for i in range(6):
        rec = build_environment(ctx, 11, i, {})
        task = synthesize_task(ctx, rec, 0, SynthStats()) if rec["verified"] else None
        if task is not None and task["gold_actions"]:
            break
    env = Environment(rec)
    env.reset(task)
    h0 = env.db_hash()
    tools = EnvTools(env)
    assert {t["function"]["name"] for t in tools.schemas} == set(rec["tools"])
    a, b = tools.session(), tools.session()
    for act in task["gold_actions"]:
        out = a.call(act["name"], act["arguments"])
        assert "Error" not in out[:6]
    assert env.db_hash() == task["expected_db_hash"]  # a's world holds the gold result
    b.call("no_such_tool", {})
    assert env.db_hash() == h0  # b's world was never touched by a's calls
    assert "unknown tool" in b.call("no_such_tool", {})
    env.close()
