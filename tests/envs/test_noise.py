"""Noise injection (longcat.envs.noise): deterministic under a seed, scaled by intensity, and never
breaking what a careful agent can recover. The end-to-end check (gold path + retrying agent
reaches full reward under every noise type) is in test_env_runtime.py."""
import json
import random

import pytest

from longcat.envs.noise import (INSTRUCTION_NOISE, NOISE_TYPES, TOOL_NOISE, TRUNCATION_MARK,
                                NoiseConfig, ToolNoise, add_typos, extract_json, make_ambiguous,
                                noisy_instruction, normalize_keys, paraphrase, result_text,
                                robust_call, shuffle_order, stable_seed)

TEXT = ("Hi, I want to cancel my order #W123. My email is ana_lee@example.com. "
        "Please also check the status of order #W456. Can you tell me the refund amount? Thanks.")
PROTECTED = ["#W123", "#W456", "ana_lee@example.com"]


def test_config_validation():
    with pytest.raises(ValueError, match="intensity"):
        NoiseConfig(types=["typos"], intensity=1.5)
    with pytest.raises(ValueError, match="unknown noise"):
        NoiseConfig(types=["earthquake"])
    assert NoiseConfig("typos").types == ("typos",)
    assert set(NoiseConfig.all().types) == set(NOISE_TYPES)
    assert NoiseConfig.all().instruction_types == INSTRUCTION_NOISE
    assert NoiseConfig.all().tool_types == TOOL_NOISE


def test_stable_seed_is_process_independent():
    assert stable_seed("a", 1) == stable_seed("a", 1)
    assert stable_seed("a", 1) != stable_seed("a", 2)
    assert 0 <= stable_seed("x") < 2 ** 63


@pytest.mark.parametrize("kind", INSTRUCTION_NOISE)
def test_instruction_noise_deterministic_and_zero_intensity_is_identity(kind):
    amb = {"email": ("ana_lee@example.com", "the email on my account")}
    a = noisy_instruction(TEXT, NoiseConfig([kind], 1.0, seed=3), key="t1", protected=PROTECTED,
                          ambiguous=amb)
    b = noisy_instruction(TEXT, NoiseConfig([kind], 1.0, seed=3), key="t1", protected=PROTECTED,
                          ambiguous=amb)
    assert a == b
    assert a[0] != TEXT
    clean = noisy_instruction(TEXT, NoiseConfig([kind], 0.0, seed=3), key="t1",
                              protected=PROTECTED, ambiguous=amb)
    assert clean == (TEXT, {})


def test_typos_never_touch_protected_values():
    for seed in range(30):
        out = add_typos(TEXT, random.Random(seed), 1.0, PROTECTED)
        for p in PROTECTED:
            assert p in out
    changed = sum(add_typos(TEXT, random.Random(s), 1.0, PROTECTED) != TEXT for s in range(20))
    assert changed >= 15
    # more intensity, more typos
    def n_diff(intensity):
        return sum(sum(a != b for a, b in zip(TEXT.split(), add_typos(
            TEXT, random.Random(s), intensity, PROTECTED).split())) for s in range(20))
    assert n_diff(1.0) > n_diff(0.2)


def test_paraphrase_and_shuffle_keep_content():
    out = paraphrase(TEXT, random.Random(0), 1.0)
    assert out != TEXT and all(p in out for p in PROTECTED)
    sh = shuffle_order(TEXT, random.Random(1), 1.0)
    assert sorted(sh.split()) == sorted(TEXT.split())


def test_ambiguity_moves_values_to_hidden_info():
    amb = {"email": ("ana_lee@example.com", "the email on my account"),
           "order_id": ("#W999", "my other order")}  # not in the text: never chosen
    text, moved = make_ambiguous(TEXT, random.Random(0), 1.0, amb)
    assert moved == {"email": "ana_lee@example.com"}
    assert "ana_lee@example.com" not in text and "the email on my account" in text


def fake_tool(calls):
    db = {"orders": [{"order_id": f"#W{i}", "total_amount": i * 10} for i in range(7)]}

    def call(name, args):
        calls.append((name, dict(args)))
        if name == "list_orders":
            return {"content": [{"type": "text", "text": json.dumps(db)}], "isError": False}
        if name == "get_order":
            if "order_id" not in args:
                return {"content": [{"type": "text", "text": "Error: missing order_id"}],
                        "isError": True}
            return {"content": [{"type": "text", "text": json.dumps(
                {"order_id": args["order_id"], "status_code": "pending"})}], "isError": False}
        if name == "cancel_order":
            db["orders"] = [o for o in db["orders"] if o["order_id"] != args["order_id"]]
            return {"content": [{"type": "text", "text": json.dumps({"cancelled": True})}],
                    "isError": False}
        return {"content": [{"type": "text", "text": f"Error: unknown tool {name}"}],
                "isError": True}
    return call, db


@pytest.mark.parametrize("kind", TOOL_NOISE)
def test_tool_noise_fires_and_robust_call_recovers(kind):
    calls = []
    call, db = fake_tool(calls)
    clean_call, _ = fake_tool([])
    noisy = ToolNoise(call, NoiseConfig([kind], 1.0, seed=0), env_key="e",
                      is_read=lambda n: n != "cancel_order")
    for name, args in [("list_orders", {}), ("get_order", {"order_id": "#W1"})]:
        _, want = robust_call(clean_call, name, args)
        _, got = robust_call(noisy, name, args)
        assert got == want, (kind, name)
    assert noisy.injected[kind] > 0
    # a write under noise executes exactly once
    n_before = len([c for c in calls if c[0] == "cancel_order"])
    res, payload = robust_call(noisy, "cancel_order", {"order_id": "#W2"})
    assert payload == {"cancelled": True}
    assert len([c for c in calls if c[0] == "cancel_order"]) == n_before + 1
    assert all(o["order_id"] != "#W2" for o in db["orders"])


def test_transient_failures_do_not_execute():
    calls = []
    call, _ = fake_tool(calls)
    noisy = ToolNoise(call, NoiseConfig(["transient"], 1.0, seed=0), env_key="e")
    r = noisy("get_order", {"order_id": "#W1"})
    assert r["isError"] and "retry" in result_text(r).lower()
    assert calls == []


def test_truncation_only_on_reads_and_once():
    calls = []
    call, _ = fake_tool(calls)
    noisy = ToolNoise(call, NoiseConfig(["truncated"], 1.0, seed=0), env_key="e",
                      is_read=lambda n: n != "cancel_order")
    r1 = noisy("list_orders", {})
    assert result_text(r1).endswith(TRUNCATION_MARK)
    r2 = noisy("list_orders", {})
    assert not result_text(r2).endswith(TRUNCATION_MARK)
    w = noisy("cancel_order", {"order_id": "#W3"})
    assert not result_text(w).endswith(TRUNCATION_MARK)


def test_pagination_protocol_and_bad_cursor():
    calls = []
    call, _ = fake_tool(calls)
    noisy = ToolNoise(call, NoiseConfig(["paginated"], 1.0, seed=0), env_key="e", page_size=3)
    p1 = json.loads(result_text(noisy("list_orders", {})))
    assert p1["page"] == 1 and p1["total_pages"] == 3 and len(p1["orders"]) == 3
    p3 = json.loads(result_text(noisy("list_orders", {"cursor": "p2"})))
    assert p3["next_cursor"] is None and len(p3["orders"]) == 1
    bad = noisy("list_orders", {"cursor": "zzz"})
    assert bad["isError"] and "cursor" in result_text(bad)
    bad = noisy("get_order", {"order_id": "#W1", "cursor": "p1"})
    assert bad["isError"]


def test_malformed_and_renamed_helpers():
    assert extract_json('[INFO x] result: {"a": [1, 2]} <<END>>') == {"a": [1, 2]}
    assert extract_json('OK abc\n[1, 2],') == [1, 2]
    with pytest.raises(ValueError):
        extract_json("no json here")
    assert normalize_keys({"orderId": 1, "TotalAmount": {"itemIds": [1]}}) == \
        {"order_id": 1, "total_amount": {"item_ids": [1]}}


def test_tool_noise_deterministic_under_seed():
    def run(seed):
        call, _ = fake_tool([])
        noisy = ToolNoise(call, NoiseConfig.all(0.7, seed=seed), env_key="env-1",
                          is_read=lambda n: n != "cancel_order")
        return [result_text(noisy(n, a)) for n, a in
                [("list_orders", {}), ("get_order", {"order_id": "#W1"}),
                 ("get_order", {"order_id": "#W1"}), ("list_orders", {})]]
    assert run(1) == run(1)
    assert run(1) != run(2) or run(1) != run(3)


def test_zero_intensity_tool_noise_is_transparent():
    call, _ = fake_tool([])
    clean, _ = fake_tool([])
    noisy = ToolNoise(call, NoiseConfig.all(0.0, seed=0), env_key="e")
    for n, a in [("list_orders", {}), ("get_order", {"order_id": "#W1"}), ("nope", {})]:
        assert noisy(n, a) == clean(n, a)


def test_inconsistent_first_answer_then_truth_and_confirm_recovers():
    from longcat.envs.noise import decoy

    call, _ = fake_tool([])
    clean, _ = fake_tool([])
    noisy = ToolNoise(call, NoiseConfig(["inconsistent"], 1.0, seed=0), env_key="e",
                      is_read=lambda n: n != "cancel_order")
    first = json.loads(result_text(noisy("get_order", {"order_id": "#W1"})))
    assert first["order_id"] == decoy("#W1") != "#W1"
    assert noisy.injected["inconsistent"] == 1
    again = json.loads(result_text(noisy("get_order", {"order_id": "#W1"})))
    assert again["order_id"] == "#W1"
    noisy.reset()
    _, got = robust_call(noisy, "list_orders", {}, confirm=True)
    assert got == robust_call(clean, "list_orders", {})[1]


def test_stale_read_after_a_write_then_fresh():
    """A stale answer is the database before the latest write; asking again is fresh."""
    state = {"db": {"orders": [{"order_id": "#W1", "status": "pending"}]}}

    def call(name, args):
        if name == "cancel_order":
            state["db"]["orders"][0]["status"] = "cancelled"
        return {"content": [{"type": "text", "text": json.dumps(state["db"])}], "isError": False}

    def snapshot():
        return json.loads(json.dumps(state["db"]))

    def restore(snap):
        state["db"] = snap

    noisy = ToolNoise(call, NoiseConfig(["stale"], 1.0, seed=0), env_key="e",
                      is_read=lambda n: n != "cancel_order", undo=(snapshot, restore))
    noisy("cancel_order", {"order_id": "#W1"})
    assert state["db"]["orders"][0]["status"] == "cancelled"
    first = json.loads(result_text(noisy("list_orders", {})))
    assert first["orders"][0]["status"] == "pending" and noisy.injected["stale"] == 1
    assert state["db"]["orders"][0]["status"] == "cancelled"    # the database is untouched
    _, got = robust_call(noisy, "list_orders", {}, confirm=True)
    assert got["orders"][0]["status"] == "cancelled"


def test_irrelevant_noise_adds_a_decoy_value():
    from longcat.envs.noise import decoy

    amb = {"email": ("ana_lee@example.com", "the email on my account")}
    text, _ = noisy_instruction(TEXT, NoiseConfig(["irrelevant"], 1.0, seed=1), key="t",
                                ambiguous=amb)
    assert f"My old email was {decoy('ana_lee@example.com')}" in text
    assert "ana_lee@example.com" in text
    assert decoy(7) == 8 and decoy("AB-0009") == "AB-0002" and decoy("xyz") == "xyg"
