import json
import re

from longcat.envs.schemas import mcp_tools, openai_tools


def test_openai_format(retail, airline):
    for dom in (retail, airline):
        tools = openai_tools(dom)
        assert len(tools) == len(dom.tools)
        for t in tools:
            assert set(t) == {"type", "function"} and t["type"] == "function"
            fn = t["function"]
            assert set(fn) == {"name", "description", "parameters"}
            assert re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", fn["name"])
            p = fn["parameters"]
            assert p["type"] == "object" and p["additionalProperties"] is False
            assert set(p["required"]) <= set(p["properties"])
            for prop in p["properties"].values():
                assert "type" in prop
        json.dumps(tools)


def test_openai_strict(retail):
    t = openai_tools(retail, ["list_user_orders"], strict=True)[0]["function"]
    assert t["strict"] is True
    p = t["parameters"]
    assert set(p["required"]) == set(p["properties"]) == {"user_id", "status", "limit"}
    assert p["properties"]["limit"]["type"] == ["integer", "null"]
    assert None in p["properties"]["status"]["enum"]
    # the non-strict form is untouched
    assert openai_tools(retail, ["list_user_orders"])[0]["function"]["parameters"]["required"] == ["user_id"]


def test_mcp_format(retail):
    tools = {t["name"]: t for t in mcp_tools(retail)}
    for t in tools.values():
        assert {"name", "description", "inputSchema", "annotations"} <= set(t)
        assert t["inputSchema"]["type"] == "object"
        if "outputSchema" in t:
            assert t["outputSchema"]["type"] == "object"
    assert tools["get_order_details"]["annotations"]["readOnlyHint"] is True
    assert tools["cancel_pending_order"]["annotations"]["readOnlyHint"] is False
    assert tools["delete_review"]["annotations"]["destructiveHint"] is True
    assert "outputSchema" not in tools["list_user_orders"]          # array results have no MCP output schema
    assert "only pending orders can be modified" in tools["modify_pending_order_address"]["description"]
