import copy

import pytest

from longcat.envs import db
from longcat.envs.check import check_domain, check_tool, make_rows
from longcat.envs.spec import parse_domain


@pytest.mark.parametrize("name", ["retail", "airline"])
def test_conversion_rate(name, request):
    dom = request.getfixturevalue(name)
    rep = check_domain(dom, seed=0)
    d = rep.to_dict()
    assert d["tools"] == len(dom.tools)
    assert rep.rate >= 0.95, d["failures"]
    # every tool with preconditions had at least one violation case built and refused
    built = sum(t.violations_total for t in rep.tools)
    assert built >= 0.9 * sum(len(dom.tool(t.tool).pre) for t in rep.tools)


def test_rows_are_valid_and_deterministic(retail, airline):
    for dom in (retail, airline):
        a, b = make_rows(dom, seed=3), make_rows(dom, seed=3)
        assert a == b
        conn = db.connect(dom)
        db.load(conn, dom, a)      # keys, foreign keys and CHECKs hold
        assert all(conn.execute(f'SELECT COUNT(*) FROM "{e}"').fetchone()[0] > 0 for e in dom.entities)


def test_check_catches_broken_tools(mini_doc):
    """A tool whose code does not reach its postcondition fails its generated test."""
    doc = copy.deepcopy(mini_doc)
    # the postcondition demands a value the cancel tool never writes
    doc["tools"][4]["post"] = ["field(order, $order_id, status) == shipped"]
    dom = parse_domain(doc, "mini.yaml")
    res = check_tool(dom, "cancel")
    assert not res.passed and not res.success
    assert "postcondition" in " ".join(res.failures)
    assert [c["case"] for c in res.cases if not c["passed"]] == ["success"]
    ok = check_tool(dom, "place")
    assert ok.passed, ok.failures
    assert all(c["passed"] for c in ok.cases) and ok.cases[0]["case"] == "success"
    assert len(ok.cases) == 1 + ok.violations_total + ok.bad_args_total
    assert ok.violations_total >= 2 and ok.bad_args_total >= 4
