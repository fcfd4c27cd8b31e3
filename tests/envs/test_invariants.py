"""Cross-table invariants: declared in the specs, enforced by the generator at every table size,
kept by the repairs environment growth makes, and reported by ``violations``."""
import copy
import dataclasses

import pytest

from longcat.envs.datagen import apply_patch, generate_rows, template_db
from longcat.envs.db import connect, dump, restore
from longcat.envs.growth import DomainContext, build_environment
from longcat.envs.invariants import Same, Sum, violations
from longcat.envs.spec import SpecError, domain_names, load_domain, parse_domain


@pytest.mark.parametrize("name", domain_names())
def test_generated_data_has_no_violations(name):
    d = load_domain(name)
    assert violations(d, generate_rows(d, 3, 6)) == []


@pytest.mark.parametrize("name", ["retail", "airline", "shipping"])
def test_large_tables_have_no_violations(name):
    d = load_domain(name)
    data = generate_rows(d, 1, 60)
    assert violations(d, data) == []
    assert max(len(rows) for rows in data.values()) >= 100


def test_retail_invariants_mean_what_they_say():
    d = load_domain("retail")
    data = generate_rows(d, 5, 20)
    addr = {a["address_id"]: a for a in data["address"]}
    pm = {p["payment_method_id"]: p for p in data["payment_method"]}
    for o in data["order"]:
        assert addr[o["address_id"]]["user_id"] == o["user_id"]
        assert pm[o["payment_method_id"]]["user_id"] == o["user_id"]
        lines = [li for li in data["order_item"] if li["order_id"] == o["order_id"]]
        assert o["total"] == pytest.approx(sum(li["quantity"] * li["unit_price"] for li in lines),
                                           abs=0.01)
    for p in data["payment_method"]:
        if p["kind"] != "credit_card":
            assert p["brand"] is None and p["last_four"] is None
    for u in data["user"]:
        assert u["created_at"] <= d.now


def test_unenforced_generation_would_violate():
    """The checks can fail: the same rows generated without enforcement break the invariants."""
    d = load_domain("retail")
    bare = dataclasses.replace(d, invariants=[])
    assert len(violations(d, generate_rows(bare, 5, 20))) > 10


def test_violations_reports_a_corrupted_row():
    d = load_domain("retail")
    data = generate_rows(d, 2, 10)
    bad = copy.deepcopy(data)
    o = bad["order"][0]
    other = next(a for a in bad["address"] if a["user_id"] != o["user_id"])
    o["address_id"] = other["address_id"]
    bad["order"][1]["total"] += 5
    out = violations(d, bad)
    assert any(o["order_id"] in v and "address_id.user_id" in v for v in out)
    assert any("sum over order_item" in v for v in out)


def test_growth_repairs_keep_invariants():
    for name in ("airline", "hr_leave", "shipping", "ride_hailing"):
        ctx = DomainContext(name)
        d = ctx.domain
        conn = connect(d)
        for i in range(3):
            env = build_environment(ctx, 4, i, {})
            restore(conn, template_db(d, env["template_seed"], env["rows"]))
            apply_patch(conn, d, env.get("patch", ()))
            assert violations(d, dump(conn, d)) == [], (name, i)
        conn.close()


def test_table_size_is_configurable():
    ctx = DomainContext("retail", rows=50)
    env = build_environment(ctx, 0, 0, {})
    assert env["rows"] == 50
    conn = connect(ctx.domain)
    restore(conn, template_db(ctx.domain, env["template_seed"], 50))
    assert conn.execute("SELECT COUNT(*) FROM 'order'").fetchone()[0] == 100
    conn.close()


@pytest.mark.parametrize("inv, message", [
    ({"same": ["order.nope.user_id", "order.user_id"]}, "no field 'nope'"),
    ({"same": ["order.status.user_id", "order.user_id"]}, "not a foreign key"),
    ({"same": ["order.user_id", "user.email"]}, "both paths must start at one entity"),
    ({"sum": "order.qty", "of": ["order.qty"], "by": "order.user_id"}, "foreign key to 'order'"),
    ({"unset": ["status"], "entity": "order", "when": {"qty": [1]}}, "nullable"),
    ({"past": ["order.qty"]}, "date or datetime"),
    ({"same": ["order.user_id", "order.user_id"], "extra": 1}, "unknown keys"),
    ({"bogus": 1}, "exactly one of"),
])
def test_bad_invariant_declarations_name_the_place(mini_doc, inv, message):
    mini_doc["invariants"] = [inv]
    with pytest.raises(SpecError, match="invariants\\[0\\]") as ei:
        parse_domain(mini_doc, "mini.yaml")
    assert message in str(ei.value) and "mini.yaml" in str(ei.value)


def test_declared_kinds_parse(retail):
    kinds = {type(i) for i in retail.invariants}
    assert Same in kinds and Sum in kinds
