"""The tool dependency graph of a domain (networkx).

Nodes are tool names with attributes ``kind`` ("read"/"write": the tool's mode), ``tool_kind``
(get, create, ...), ``entity``, ``requires`` (the semantic keys its required parameters need,
minus the user-held keys of the domain) and ``provides`` (the semantic keys its output supplies).
An edge u -> v with attribute ``keys`` (a set) exists when u provides a key that v requires (and
u != v). Tools whose ``requires`` is empty are entry points: a user can start there.

Semantic keys come from the spec (``spec.py``): a primary key ``order.order_id`` has key
``order_id``, a foreign key ``order.user_id -> user.user_id`` shares ``user_id``, other fields
have a key only when declared; ``user_held`` keys are known to the user and never dependencies.

API (stable): ``build_dependency_graph(domain) -> nx.DiGraph``, ``entry_points(g)``,
``satisfiable(g, tools, known=())`` (can every tool in a set get its keys from the others and
the entry points), ``graph_stats(g) -> dict``, ``to_json(g) -> dict``.
"""
from __future__ import annotations

import networkx as nx

from .spec import Domain

__all__ = ["build_dependency_graph", "entry_points", "graph_stats", "to_json", "satisfiable"]


def build_dependency_graph(domain: Domain) -> nx.DiGraph:
    g = nx.DiGraph(domain=domain.name, user_held=set(domain.user_held))
    for t in domain.tools.values():
        g.add_node(t.name, kind=t.mode, tool_kind=t.kind, entity=t.entity,
                   requires=t.requires(domain.user_held), provides=set(t.provides))
    by_key: dict[str, list[str]] = {}
    for n, d in g.nodes(data=True):
        for k in d["provides"]:
            by_key.setdefault(k, []).append(n)
    for v, d in g.nodes(data=True):
        for k in d["requires"]:
            for u in by_key.get(k, []):
                if u == v:
                    continue
                if g.has_edge(u, v):
                    g.edges[u, v]["keys"].add(k)
                else:
                    g.add_edge(u, v, keys={k})
    return g


def entry_points(g: nx.DiGraph) -> list[str]:
    return sorted(n for n, d in g.nodes(data=True) if not d["requires"])


def satisfiable(g: nx.DiGraph, tools, known=()) -> bool:
    """True when the tools can be ordered so each one's required keys are provided by tools
    before it (or are in ``known``)."""
    have, todo = set(known), set(tools)
    while todo:
        ready = [t for t in todo if g.nodes[t]["requires"] <= have]
        if not ready:
            return False
        for t in ready:
            have |= g.nodes[t]["provides"]
            todo.discard(t)
    return True


def graph_stats(g: nx.DiGraph) -> dict:
    n = g.number_of_nodes()
    reads = sum(1 for _, d in g.nodes(data=True) if d["kind"] == "read")
    reachable = set()
    for s in entry_points(g):
        reachable |= {s} | nx.descendants(g, s)
    # a tool is usable when its keys can be produced from the entry points at all
    usable = [t for t in g.nodes if satisfiable(g, _closure(g, t), ())]
    return {"domain": g.graph.get("domain"), "tools": n, "read": reads, "write": n - reads,
            "edges": g.number_of_edges(), "density": nx.density(g) if n > 1 else 0.0,
            "entry_points": len(entry_points(g)), "reachable_from_entry": len(reachable),
            "usable": len(usable),
            "keys": len({k for _, d in g.nodes(data=True) for k in d["provides"] | d["requires"]}),
            "weakly_connected_components": nx.number_weakly_connected_components(g) if n else 0}


def _closure(g: nx.DiGraph, t: str) -> set:
    return {t} | nx.ancestors(g, t)


def to_json(g: nx.DiGraph) -> dict:
    return {"domain": g.graph.get("domain"), "user_held": sorted(g.graph.get("user_held", ())),
            "nodes": [{"name": n, "kind": d["kind"], "tool_kind": d["tool_kind"], "entity": d["entity"],
                       "requires": sorted(d["requires"]), "provides": sorted(d["provides"])}
                      for n, d in g.nodes(data=True)],
            "edges": [{"from": u, "to": v, "keys": sorted(d["keys"])} for u, v, d in g.edges(data=True)]}
