import json
import sqlite3

import pytest

from longcat.envs import db
from longcat.envs.check import make_rows
from longcat.envs.toolgen import MAX_ARGUMENT_BYTES, ToolError, ToolRuntime, register_hook


@pytest.fixture
def retail_rt(retail):
    conn = db.connect(retail)
    db.load(conn, retail, make_rows(retail, seed=1))
    yield ToolRuntime(retail, conn)
    conn.close()


@pytest.fixture
def airline_rt(airline):
    conn = db.connect(airline)
    db.load(conn, airline, make_rows(airline, seed=1))
    yield ToolRuntime(airline, conn)
    conn.close()


def _row(rt, entity, **where):
    w = " AND ".join(f'"{k}" = ?' for k in where)
    e = rt.domain.entity(entity)
    r = rt.conn.execute(f'SELECT {", ".join(chr(34) + f + chr(34) for f in e.fields)} FROM "{entity}"'
                        + (f" WHERE {w}" if w else "") + " ORDER BY 1 LIMIT 1", list(where.values())).fetchone()
    return None if r is None else db.row_from_db(e, r)


def _hash(rt):
    return db.db_hash(rt.conn, rt.domain)


def test_mcp_result_shape(retail_rt):
    user = _row(retail_rt, "user")
    r = retail_rt.call("find_user_id_by_email", {"email": user["email"]})
    d = r.to_dict()
    assert d["isError"] is False and r["isError"] is False
    assert d["content"][0]["type"] == "text"
    assert json.loads(d["content"][0]["text"]) == user == d["structuredContent"] == r.data
    r = retail_rt.call("list_user_orders", {"user_id": user["user_id"]})
    assert r.to_dict()["structuredContent"] == {"result": r.data} and isinstance(r.data, list)


def test_retail_write_flow(retail_rt):
    rt = retail_rt
    order = _row(rt, "order", status="pending")
    reason = "ordered by mistake"
    r = rt.call("cancel_pending_order", {"order_id": order["order_id"], "reason": reason})
    assert not r.is_error, r.text
    assert r.data["status"] == "cancelled" and r.data["cancel_reason"] == reason
    assert _row(rt, "order", order_id=order["order_id"])["status"] == "cancelled"
    h = _hash(rt)
    r = rt.call("cancel_pending_order", {"order_id": order["order_id"], "reason": reason})
    assert r.is_error and "precondition failed" in r.text and _hash(rt) == h
    # create: a new id, the count grows by one, set values applied
    user = _row(rt, "user", status="active")
    addr = _row(rt, "address", user_id=user["user_id"]) or rt.call(
        "add_address", {"user_id": user["user_id"], "line1": "1 A St", "city": "B", "state": "C", "zip": "1"}).data
    n = rt.state.count("ticket", {})
    r = rt.call("open_ticket", {"user_id": user["user_id"], "subject": "late parcel", "priority": "high"})
    assert not r.is_error, r.text
    assert r.data["status"] == "open" and r.data["created_at"] == rt.domain.now and r.data["order_id"] is None
    assert rt.state.count("ticket", {}) == n + 1
    assert addr["user_id"] == user["user_id"]


def test_airline_flow(airline_rt):
    rt = airline_rt
    user = _row(rt, "user", status="active")
    pay = rt.call("add_gift_card", {"user_id": user["user_id"], "balance": 300.0})
    assert not pay.is_error, pay.text
    airports = [a["code"] for a in rt.call("search_airports", {}).data]
    res = rt.call("book_reservation", {"user_id": user["user_id"], "origin": airports[0], "destination": airports[1],
                                       "trip_type": "one_way", "cabin": "economy",
                                       "payment_id": pay.data["payment_id"], "total_price": 120.0,
                                       "insurance": False})
    assert not res.is_error, res.text
    rid = res.data["reservation_id"]
    h = _hash(rt)
    r = rt.call("cancel_reservation", {"reservation_id": rid})   # neither insured nor business
    assert r.is_error and "only insured or business-cabin" in r.text and _hash(rt) == h
    assert not rt.call("add_travel_insurance", {"reservation_id": rid}).is_error
    assert not rt.call("cancel_reservation", {"reservation_id": rid}).is_error
    r = rt.call("book_reservation", {"user_id": user["user_id"], "origin": airports[0], "destination": airports[0],
                                     "trip_type": "one_way", "cabin": "economy",
                                     "payment_id": pay.data["payment_id"], "total_price": 1.0, "insurance": False})
    assert r.is_error and "same airport" in r.text


@pytest.mark.parametrize("name,args,fragment", [
    ("no_such_tool", {}, "unknown tool 'no_such_tool'"),
    (None, {}, "unknown tool None"),
    ("get_order_details", {}, "order_id: missing required argument"),
    ("get_order_details", {"order_id": 7}, "order_id: expected string, got integer 7"),
    ("get_order_details", {"order_id": None}, "expected string, got null"),
    ("get_order_details", {"order_id": "#W1", "extra": 1}, "extra: unknown argument"),
    ("get_order_details", ["#W1"], "expected a JSON object, got array"),
    ("get_order_details", "{not json", "not valid JSON"),
    ("get_order_details", {"order_id": "x" * (MAX_ARGUMENT_BYTES + 10)}, "exceed the limit"),
    ("get_order_details", {"order_id": "#NOPE"}, "order '#NOPE' not found"),
    ("add_loyalty_points", {"user_id": "U-000001", "amount": True}, "expected integer, got boolean"),
    ("add_loyalty_points", {"user_id": "U-000001", "amount": 1.5}, "expected integer"),
    ("add_loyalty_points", {"user_id": "U-000001", "amount": -10**9}, "would fall below 0"),
    ("cancel_pending_order", {"order_id": "#W000001", "reason": "bored"}, "expected one of"),
    ("change_ticket_priority", {"ticket_id": "T-000001", "priority": ["high"]}, "got array"),
    ("restock_item", {"item_id": "I-000001", "amount": float("nan")}, "expected integer"),
    ("search_users", {"first_name": "a\x00b"}, "may not contain NUL"),
])
def test_bad_calls_are_error_observations(retail_rt, name, args, fragment):
    h = _hash(retail_rt)
    r = retail_rt.call(name, args)
    assert r.is_error and r["isError"] is True
    assert fragment in r.text, r.text
    assert r.text.startswith("Error: ")
    assert _hash(retail_rt) == h


@pytest.mark.parametrize("payload", ["'; DROP TABLE \"order\"; --", "x' OR '1'='1", "%", "_", "\\",
                                     "Robert'); DELETE FROM user;--"])
def test_injection_strings_are_data(retail_rt, payload):
    rt = retail_rt
    h = _hash(rt)
    r = rt.call("get_order_details", {"order_id": payload})
    assert r.is_error and "not found" in r.text
    r = rt.call("search_users", {"first_name": payload})
    # LIKE wildcards are escaped too: only names containing the text itself match
    assert not r.is_error
    assert all(payload.lower() in u["first_name"].lower() for u in r.data)
    if payload != "_":
        assert r.data == []
    assert _hash(rt) == h
    ticket = _row(rt, "ticket")
    r = rt.call("change_ticket_priority", {"ticket_id": ticket["ticket_id"], "priority": "low"})
    assert not r.is_error
    user = _row(rt, "user", status="active")
    r = rt.call("update_user_name", {"user_id": user["user_id"], "first_name": payload, "last_name": "x"})
    assert not r.is_error and r.data["first_name"] == payload
    assert rt.state.count("order", {}) > 0


def test_failed_write_rolls_back(retail):
    """A hook that writes and then fails leaves nothing behind; so does a postcondition failure."""
    import copy

    from longcat.envs.spec import parse_domain
    import yaml
    doc = yaml.safe_load(open(retail.source))
    doc["hooks"] = None
    doc["tools"] = [t for t in doc["tools"] if t["name"] != "calculate_order_total"]
    doc["tools"].append({"name": "half_write", "kind": "custom", "mode": "write", "hook": "test.half_write",
                         "entity": "user", "params": {"user_id": {"field": "user.user_id"}},
                         "description": "writes, then fails"})
    doc["tools"].append({"name": "lying_write", "kind": "custom", "mode": "write", "hook": "test.lying_write",
                         "entity": "user", "params": {"user_id": {"field": "user.user_id"}},
                         "post": ["field(user, $user_id, loyalty_points) == before.field(user, $user_id, loyalty_points) + 1"],
                         "description": "adds 2 points but promises 1"})
    doc["tools"].append({"name": "sneaky_read", "kind": "custom", "mode": "read", "hook": "test.lying_write",
                         "entity": "user", "params": {"user_id": {"field": "user.user_id"}},
                         "description": "a read that writes"})
    doc["tools"].append({"name": "crashing", "kind": "custom", "mode": "read", "hook": "test.crash",
                         "params": {"n": {"type": "integer"}}, "returns": {"type": "object"},
                         "description": "raises"})

    @register_hook("test.half_write")
    def half_write(ctx, args):
        ctx.update("user", args["user_id"], {"loyalty_points": 99})
        ctx.insert("ticket", {"user_id": args["user_id"], "subject": "s", "created_at": ctx.now})
        raise ToolError("gave up half way")

    @register_hook("test.lying_write")
    def lying_write(ctx, args):
        row = ctx.require("user", args["user_id"])
        return ctx.update("user", args["user_id"], {"loyalty_points": row["loyalty_points"] + 2})

    @register_hook("test.crash")
    def crash(ctx, args):
        return {"x": 1 // (args["n"] - args["n"])}

    dom = parse_domain(copy.deepcopy(doc), retail.source)
    conn = db.connect(dom)
    db.load(conn, dom, make_rows(dom, seed=2))
    rt = ToolRuntime(dom, conn)
    uid = _row(rt, "user")["user_id"]
    h = _hash(rt)
    r = rt.call("half_write", {"user_id": uid})
    assert r.is_error and r.text == "Error: gave up half way" and _hash(rt) == h
    r = rt.call("lying_write", {"user_id": uid})
    assert r.is_error and "postcondition" in r.text and _hash(rt) == h
    assert rt.stats.post_failures == [("lying_write", dom.tool("lying_write").post[0].text)]
    r = rt.call("sneaky_read", {"user_id": uid})
    assert r.is_error and "read-only tool" in r.text and _hash(rt) == h
    r = rt.call("crashing", {"n": 3})
    assert r.is_error and "ZeroDivisionError" in r.text
    assert rt.stats.internal_errors == 3
    # the environment keeps working
    assert not rt.call("get_user_details", {"user_id": uid}).is_error
    with pytest.raises(ValueError, match="already registered"):
        register_hook("test.crash")(lambda ctx, args: None)


def test_strict_null_optional_means_omitted(retail_rt):
    user = _row(retail_rt, "user")
    a = retail_rt.call("list_user_orders", {"user_id": user["user_id"], "status": None, "limit": None})
    b = retail_rt.call("list_user_orders", {"user_id": user["user_id"]})
    assert not a.is_error and a.data == b.data


def test_runtime_rejects_wrong_setup(retail):
    with pytest.raises(TypeError, match="connection: expected sqlite3.Connection"):
        ToolRuntime(retail, "db.sqlite")
    with pytest.raises(ValueError, match="isolation_level=None"):
        ToolRuntime(retail, sqlite3.connect(":memory:"))
    with pytest.raises(TypeError, match="domain: expected"):
        ToolRuntime({"domain": "retail"}, db.connect(retail))
