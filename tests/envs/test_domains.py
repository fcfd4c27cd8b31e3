"""Every domain in envs/ loads, is big enough (>= 60 tools), has machine-checkable conditions,
passes the generated per-tool tests (``check``) at >= 95%, and has a dependency graph with entry
points and dependency chains of length >= 3."""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import pytest

from longcat.envs import graph as G
from longcat.envs.check import check_domain
from longcat.envs.spec import domain_names, load_domain

DOMAINS = domain_names()
MIN_DOMAINS = 22
MIN_TOOLS = 60
MIN_CONVERSION = 0.95
MIN_CHAIN = 3


def chain_levels(domain) -> dict[str, int]:
    """The shortest dependency chain ending at each tool: 1 for an entry point, else 1 + the
    latest level at which one of its required keys first becomes available (BFS over keys,
    user-held keys known from the start). Unreachable tools are left out."""
    g = G.build_dependency_graph(domain)
    key_level = {k: 0 for k in domain.user_held}
    levels: dict[str, int] = {}
    frontier = True
    while frontier:
        frontier = False
        for n, d in g.nodes(data=True):
            if n in levels or not d["requires"] <= set(key_level):
                continue
            levels[n] = 1 + max((key_level[k] for k in d["requires"]), default=0)
            frontier = True
        for n, lvl in levels.items():
            for k in g.nodes[n]["provides"]:
                if k not in key_level or key_level[k] > lvl:
                    key_level[k] = lvl
    return levels


def _check(name: str) -> tuple[str, float, list]:
    rep = check_domain(load_domain(name))
    return name, rep.rate, [(t.tool, t.failures[:2]) for t in rep.failures()]


@pytest.fixture(scope="module")
def reports():
    # both cores: the check of ~22 domains is the slow part of this file
    with ProcessPoolExecutor(max_workers=2) as ex:
        return {n: (rate, fails) for n, rate, fails in ex.map(_check, DOMAINS)}


def test_domain_count():
    assert len(DOMAINS) >= MIN_DOMAINS, f"expected >= {MIN_DOMAINS} domains in envs/, found {len(DOMAINS)}: {DOMAINS}"


@pytest.mark.parametrize("name", DOMAINS)
def test_domain_shape(name):
    d = load_domain(name)
    assert d.name == name
    assert len(d.tools) >= MIN_TOOLS, f"{name}: {len(d.tools)} tools, expected >= {MIN_TOOLS}"
    assert d.description and d.policy, f"{name}: needs a description and a policy"
    assert d.user_held, f"{name}: declares no user-held keys"
    reads = [t for t in d.tools.values() if t.mode == "read"]
    writes = [t for t in d.tools.values() if t.mode == "write"]
    assert len(reads) >= 15 and len(writes) >= 15, f"{name}: {len(reads)} reads / {len(writes)} writes"
    for t in writes:
        # a write states what must hold before and what holds after, machine-checkably
        assert t.pre, f"{name}.{t.name}: a write without preconditions"
        assert t.post, f"{name}.{t.name}: a write without postconditions"
    for t in d.tools.values():
        # a tool that takes an id of a row must check that the row exists (or more)
        keyed = [p.name for p in t.params.values() if p.required and p.field is not None
                 and (p.field[1] == d.entities[p.field[0]].primary_key
                      or d.entities[p.field[0]].fields[p.field[1]].ref is not None)]
        if keyed:
            assert t.pre, f"{name}.{t.name}: takes {keyed} but has no precondition"
        if t.kind == "custom":
            assert t.post, f"{name}.{t.name}: a custom tool without postconditions"
    # every entity can be read back by its key (so writes on it are observable to an agent)
    readable = {t.entity for t in d.tools.values() if t.kind == "get"}
    assert set(d.entities) <= readable, f"{name}: entities without a get tool: {set(d.entities) - readable}"
    expanded = d.expand()
    assert len(expanded["tools"]) == len(d.tools)


@pytest.mark.parametrize("name", DOMAINS)
def test_domain_graph(name):
    d = load_domain(name)
    g = G.build_dependency_graph(d)
    stats = G.graph_stats(g)
    assert stats["entry_points"] >= 3, f"{name}: {stats['entry_points']} entry points"
    assert stats["usable"] == len(d.tools), f"{name}: only {stats['usable']}/{len(d.tools)} tools reachable"
    # many tools consume ids that other tools produce
    consumers = sum(1 for n in g.nodes if g.in_degree(n) > 0)
    assert consumers >= 0.6 * len(d.tools), f"{name}: only {consumers} tools depend on others"
    levels = chain_levels(d)
    assert len(levels) == len(d.tools), f"{name}: unreachable tools {set(d.tools) - set(levels)}"
    deep = [t for t, lvl in levels.items() if lvl >= MIN_CHAIN]
    assert deep, f"{name}: no dependency chain of length >= {MIN_CHAIN} (max {max(levels.values())})"


def test_chain_levels_known_chain():
    # food delivery: email (user-held) -> customer_id -> order_id -> the order's lines
    d = load_domain("food_delivery")
    levels = chain_levels(d)
    assert levels["find_customer_by_email"] == 1
    assert levels["search_restaurants"] == 1
    assert levels["list_customer_orders"] == 2
    assert levels["list_order_lines"] == 3
    for t, lvl in levels.items():
        assert (lvl == 1) == (not d.tools[t].requires(d.user_held)), t


@pytest.mark.slow
@pytest.mark.parametrize("name", DOMAINS)
def test_domain_check_conversion(name, reports):
    rate, fails = reports[name]
    assert rate >= MIN_CONVERSION, f"{name}: conversion {rate:.3f} < {MIN_CONVERSION}; failures: {fails}"
