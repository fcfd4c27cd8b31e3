import networkx as nx

from longcat.envs.graph import build_dependency_graph, entry_points, graph_stats, satisfiable, to_json


def test_contract(retail):
    g = build_dependency_graph(retail)
    assert isinstance(g, nx.DiGraph)
    assert set(g.nodes) == set(retail.tools)
    for n, d in g.nodes(data=True):
        assert d["kind"] in ("read", "write")
        assert isinstance(d["requires"], set) and isinstance(d["provides"], set)
        assert not d["requires"] & retail.user_held
    for u, v, d in g.edges(data=True):
        assert d["keys"] and d["keys"] <= g.nodes[u]["provides"] & g.nodes[v]["requires"]
        assert u != v
    # every provider/consumer pair is an edge
    for u in g.nodes:
        for v in g.nodes:
            if u != v and g.nodes[u]["provides"] & g.nodes[v]["requires"]:
                assert g.has_edge(u, v)


def test_retail_shape(retail):
    g = build_dependency_graph(retail)
    assert g.nodes["find_user_id_by_email"]["requires"] == set()           # email is user-held
    assert "find_user_id_by_email" in entry_points(g)
    assert g.nodes["cancel_pending_order"]["requires"] == {"order_id"}
    assert g.nodes["cancel_pending_order"]["kind"] == "write"
    assert "user_id" in g.nodes["find_user_id_by_email"]["provides"]
    assert g.has_edge("find_user_id_by_email", "list_user_orders")
    assert g.has_edge("list_user_orders", "cancel_pending_order")
    assert g.edges["list_user_orders", "cancel_pending_order"]["keys"] == {"order_id"}
    assert g.nodes["place_order"]["requires"] == {"user_id", "address_id", "payment_method_id"}
    assert "order_id" in g.nodes["place_order"]["provides"]
    # a chain: email -> user -> orders -> cancel
    assert satisfiable(g, ["find_user_id_by_email", "list_user_orders", "cancel_pending_order"])
    assert not satisfiable(g, ["cancel_pending_order"])
    assert satisfiable(g, ["cancel_pending_order"], known={"order_id"})


def test_stats_and_json(retail, airline):
    for dom in (retail, airline):
        g = build_dependency_graph(dom)
        s = graph_stats(g)
        assert s["tools"] == len(dom.tools) >= 60
        assert s["usable"] == s["tools"]           # every tool's keys can be produced from an entry point
        assert 0 < s["density"] < 1 and s["entry_points"] >= 3
        j = to_json(g)
        assert len(j["nodes"]) == s["tools"] and len(j["edges"]) == s["edges"]
