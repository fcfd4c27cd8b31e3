import asyncio

import pytest

from longcat.rl.context import SUMMARY_PREFIX, ContextConfig, manage_context


def conversation(turns):
    msgs = [{"role": "system", "content": "policy"}, {"role": "user", "content": "question"}]
    for i in range(turns):
        msgs += [{"role": "assistant", "content": f"call {i}"}, {"role": "tool", "content": f"result {i} " * 5}]
    return msgs


def words(messages):
    return sum(len(m["content"].split()) for m in messages)


async def summarize(history):
    return f"{len(history)} messages"


def run(msgs, cfg):
    return asyncio.run(manage_context(msgs, cfg, words, summarize))


def test_short_context_is_unchanged():
    msgs = conversation(1)
    assert run(msgs, ContextConfig(summarize_at=100, max_turns=5)) == (msgs, None)


def test_summarise_past_the_threshold():
    msgs = conversation(3)
    out, action = run(msgs, ContextConfig(summarize_at=20))
    assert action == "summarize"
    assert out[:2] == msgs[:2] and out[2] == {"role": "user", "content": SUMMARY_PREFIX + "6 messages"}


def test_discard_at_the_turn_limit_wins():
    msgs = conversation(4)
    out, action = run(msgs, ContextConfig(summarize_at=20, max_turns=4))
    assert action == "discard" and out == msgs[:2]
    no_system = msgs[1:]
    assert run(no_system, ContextConfig(max_turns=4)) == (no_system[:1], "discard")


def test_bad_config():
    with pytest.raises(ValueError, match="max_turns"):
        ContextConfig(max_turns=0)
    with pytest.raises(ValueError, match="messages"):
        run([], ContextConfig())
