import json

import pytest

from longcat.envs import spec
from longcat.envs.spec import SpecError, parse_domain


def test_domains_load_with_60_plus_tools(retail, airline):
    for dom in (retail, airline):
        assert len(dom.tools) >= 60
        assert {t.mode for t in dom.tools.values()} == {"read", "write"}
        for t in dom.tools.values():
            if t.mode == "write":
                assert t.pre and t.post, f"{dom.name}.{t.name}: a write without pre/postconditions"
            if "key_param" in t.options:
                assert t.pre[0].text.startswith("exists("), t.name


def test_expand_is_full_json(retail):
    data = json.loads(json.dumps(retail.expand()))
    assert data["domain"] == "retail"
    assert "pending orders" in data["policy"] and data["hooks"] == "longcat.envs.hooks.retail"
    tools = {t["name"]: t for t in data["tools"]}
    t = tools["cancel_pending_order"]
    assert t["mode"] == "write"
    assert t["parameters"]["required"] == ["order_id", "reason"]
    assert t["parameters"]["properties"]["reason"]["enum"] == ["no longer needed", "ordered by mistake"]
    assert "field(order, $order_id, status) in [pending]" in [c["cond"] for c in t["preconditions"]]
    assert "field(order, $order_id, status) == cancelled" in [c["cond"] for c in t["postconditions"]]
    assert data["entities"]["order"]["fields"]["user_id"]["ref"] == ["user", "user_id"]


def test_generated_conditions_per_kind(mini_doc):
    dom = parse_domain(mini_doc, "mini.yaml")
    place = dom.tool("place")
    texts = [c.text for c in place.pre]
    assert "exists(user, user_id=$user_id)" in texts
    assert any("count(order) == before.count(order) + 1" == c.text for c in place.post)
    assert any(c.text == "field(order, $result.order_id, status) == pending" for c in place.post)
    drop = dom.tool("drop_user")
    assert any("not exists(order, user_id=$user_id)" in c.text for c in drop.pre)
    assert dom.tool("credit").params["amount"].schema == {"type": "number"}
    assert dom.tool("list_orders").params["status"].required is False


def test_delete_guards_self_references(mini_doc):
    mini_doc["entities"]["user"]["fields"]["referrer"] = {"type": "string", "ref": "user.user_id", "nullable": True}
    dom = parse_domain(mini_doc, "mini.yaml")
    texts = [c.text for c in dom.tool("drop_user").pre]
    assert "not exists(user, referrer=$user_id)" in texts and "not exists(order, user_id=$user_id)" in texts


def test_semantic_keys(mini_doc):
    dom = parse_domain(mini_doc, "mini.yaml")
    assert dom.entity("order").fields["user_id"].key == "user_id"
    assert dom.entity("order").fields["order_id"].key == "order_id"
    assert dom.tool("find_user").requires(dom.user_held) == set()
    assert dom.tool("cancel").requires(dom.user_held) == {"order_id"}


def _bad(doc, where, *words):
    with pytest.raises(SpecError) as ei:
        parse_domain(doc, "mini.yaml")
    msg = str(ei.value)
    assert msg.startswith("mini.yaml: "), msg
    assert where in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def test_unknown_type(mini_doc):
    mini_doc["entities"]["user"]["fields"]["email"]["type"] = "text"
    _bad(mini_doc, "entities.user.fields.email.type", "unknown type 'text'")


def test_dangling_foreign_key(mini_doc):
    mini_doc["entities"]["order"]["fields"]["user_id"]["ref"] = "customer.user_id"
    _bad(mini_doc, "entities.order.fields.user_id.ref", "dangling", "customer")
    mini_doc["entities"]["order"]["fields"]["user_id"]["ref"] = "user.nope"
    _bad(mini_doc, "entities.order.fields.user_id.ref", "no field 'nope'")


def test_foreign_key_to_non_unique_field(mini_doc):
    mini_doc["entities"]["order"]["fields"]["user_id"]["ref"] = "user.status"
    _bad(mini_doc, "ref", "primary key or unique")


def test_duplicate_tool_names(mini_doc):
    mini_doc["tools"].append(dict(mini_doc["tools"][0]))
    _bad(mini_doc, "tools[7] (get_user).name", "duplicate tool name 'get_user'")


def test_condition_with_unknown_field(mini_doc):
    mini_doc["tools"][3]["pre"] = ["field(user, $user_id, colour) == red"]
    _bad(mini_doc, "tools[3] (place).pre[0]", "unknown field user.colour")


def test_condition_with_unknown_entity_and_param(mini_doc):
    mini_doc["tools"][3]["pre"] = ["exists(customer, id=$user_id)"]
    _bad(mini_doc, "tools[3] (place).pre[0]", "unknown entity 'customer'")
    mini_doc["tools"][3]["pre"] = ["exists(user, user_id=$customer)"]
    _bad(mini_doc, "tools[3] (place).pre[0]", "unknown parameter $customer")


def test_undeclared_enum_value(mini_doc):
    mini_doc["tools"][3]["pre"] = ["field(user, $user_id, status) == banned"]
    _bad(mini_doc, "pre[0]", "'banned' is not a value of user.status")
    mini_doc["tools"][4]["from"] = ["pending", "lost"]
    mini_doc["tools"][3]["pre"] = []
    _bad(mini_doc, "tools[4] (cancel).from[1]", "'lost'")


def test_literal_of_wrong_type(mini_doc):
    mini_doc["tools"][3]["pre"] = ["field(order, $user_id, qty) == 'many'"]
    _bad(mini_doc, "pre[0]", "cannot equal order.qty, a integer field")
    mini_doc["tools"][3]["pre"] = ["exists(order, gift=1)"]
    _bad(mini_doc, "pre[0]", "order.gift, a boolean field")


def test_list_as_filter_value(mini_doc):
    mini_doc["tools"][3]["pre"] = ["exists(order, status=[pending, shipped])"]
    _bad(mini_doc, "pre[0]", "takes one value, not a list")


def test_condition_phase_rules(mini_doc):
    mini_doc["tools"][3]["pre"] = ["before.count(order) == 0"]
    _bad(mini_doc, "pre[0]", "postconditions")
    mini_doc["tools"][3]["pre"] = ["$result.order_id == null"]
    _bad(mini_doc, "pre[0]", "$result")
    mini_doc["tools"][3]["pre"] = []
    mini_doc["tools"][3]["post"] = ["$result.nope == 1"]
    _bad(mini_doc, "post[0]", "unknown result field 'nope'")
    mini_doc["tools"][3]["post"] = ["before.field(order, $result.order_id, qty) == 1"]
    _bad(mini_doc, "post[0]", "before.")


def test_condition_syntax_error(mini_doc):
    mini_doc["tools"][3]["pre"] = ["field(user, $user_id status) == active"]
    _bad(mini_doc, "tools[3] (place).pre[0]", "bad condition", "column")


def test_other_structural_errors(mini_doc):
    import copy
    base = copy.deepcopy(mini_doc)
    mini_doc["tools"][0]["kind"] = "fetch"
    _bad(mini_doc, "tools[0] (get_user).kind", "unknown kind 'fetch'")
    mini_doc = copy.deepcopy(base)
    mini_doc["tools"][0]["entity"] = "nope"
    _bad(mini_doc, "tools[0] (get_user).entity", "unknown entity 'nope'")
    mini_doc = copy.deepcopy(base)
    mini_doc["tools"][3]["fields"] = ["user_id"]   # qty gets no value
    _bad(mini_doc, "tools[3] (place).fields", "order.qty gets no value")
    mini_doc = copy.deepcopy(base)
    mini_doc["tools"][3]["set"] = {"colour": "red"}
    _bad(mini_doc, "tools[3] (place).set.colour", "no field 'colour'")
    mini_doc = copy.deepcopy(base)
    mini_doc["tools"][3]["set"] = {"status": "lost"}
    _bad(mini_doc, "tools[3] (place).set.status", "'lost'")
    mini_doc = copy.deepcopy(base)
    mini_doc["user_held"] = ["passport"]
    _bad(mini_doc, "user_held[0]", "'passport' is not a semantic key")
    mini_doc = copy.deepcopy(base)
    mini_doc["tools"][5]["hook"] = "x"
    _bad(mini_doc, "tools[5] (credit)", "does not take ['hook']")
    mini_doc = copy.deepcopy(base)
    mini_doc["tools"].append({"name": "magic", "kind": "custom", "mode": "read", "hook": "no.such.hook",
                              "description": "d"})
    _bad(mini_doc, "tools[7] (magic).hook", "not registered")
    mini_doc = copy.deepcopy(base)
    mini_doc["entities"]["user"]["fields"]["status"]["default"] = "gone"
    _bad(mini_doc, "entities.user.fields.status.default", "'gone'")
    mini_doc = copy.deepcopy(base)
    mini_doc["tools"].append({"name": "noop", "kind": "update_fields", "entity": "user", "fields": [],
                              "description": "d"})
    _bad(mini_doc, "tools[7] (noop).fields", "change nothing")
    mini_doc = copy.deepcopy(base)
    mini_doc["tools"][1]["description"] = " "
    _bad(mini_doc, "tools[1] (find_user).description", "needs a description")
    with pytest.raises(SpecError, match="top level"):
        parse_domain(["not", "a", "mapping"], "mini.yaml")


def test_file_errors(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("domain: bad\nentities: [\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        spec.load_domain(p)
    p.write_text("domain: other\nentities: {}\ntools: []\n")
    with pytest.raises(SpecError, match="differs from its file name"):
        spec.load_domain(p)
    with pytest.raises(FileNotFoundError, match="known domains"):
        spec.load_domain("no_such_domain")


def test_domains_dir_override(tmp_path, monkeypatch, retail):
    (tmp_path / "retail.yaml").write_text(open(retail.source).read())
    monkeypatch.setenv("LONGCAT_ENVS_DIR", str(tmp_path))
    assert spec.domains_dir() == tmp_path
    assert spec.domain_names() == ["retail"]
    assert len(spec.load_domain("retail").tools) == len(retail.tools)
    monkeypatch.setenv("LONGCAT_ENVS_DIR", str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="LONGCAT_ENVS_DIR"):
        spec.domain_names()
