import pytest

from longcat.envs import conditions as C


class FakeState:
    """Rows in dicts: {entity: {key: row}} (primary key named 'id')."""

    def __init__(self, tables):
        self.t = tables

    def _match(self, e, f):
        return [r for r in self.t[e].values() if all(r.get(k) == v for k, v in f.items())]

    def exists(self, e, f):
        return bool(self._match(e, f))

    def count(self, e, f):
        return len(self._match(e, f))

    def field(self, e, key, name):
        r = self.t[e].get(key)
        return None if r is None else r[name]

    def sum(self, e, name, f):
        return sum(r[name] for r in self._match(e, f))


STATE = FakeState({"order": {"o1": {"id": "o1", "status": "pending", "user": "u1", "total": 10.0},
                             "o2": {"id": "o2", "status": "shipped", "user": "u1", "total": 2.5},
                             "o3": {"id": "o3", "status": "cancelled", "user": "u2", "total": 1}}})


@pytest.mark.parametrize("text,params,want", [
    ("exists(order, id=$o)", {"o": "o1"}, True),
    ("exists(order, id=$o)", {"o": "zz"}, False),
    ("exists(order, user=u1, status=shipped)", {}, True),
    ("field(order, $o, status) in [pending, processing]", {"o": "o1"}, True),
    ("field(order, $o, status) not in [pending, processing]", {"o": "o1"}, False),
    ("field(order, $o, status) == null", {"o": "nope"}, True),
    ("count(order, user=$u) == 2", {"u": "u1"}, True),
    ("count(order) >= 3 and not exists(order, status='lost')", {}, True),
    ("sum(order, total, user=u1) == 12.5", {}, True),
    ("field(order, $o, total) + $x > 10", {"o": "o1", "x": 0.5}, True),
    ("field(order, $o, total) - 2 * $x < 0", {"o": "o2", "x": 2}, True),
    ("-$x == 0 - 3", {"x": 3}, True),
    ("$opt == null or exists(order, id=$opt)", {"opt": None}, True),
    ("$opt == null or exists(order, id=$opt)", {"opt": "zz"}, False),
    ("len($items) == 2", {"items": [1, 2]}, True),
    ("$flag == true", {"flag": 1}, False),          # a boolean is not the integer 1
    ("$a <= $b", {"a": 2, "b": 2.0}, True),
    ("$a < $b", {"a": None, "b": 2}, False),        # ordering with null is false
    ("(exists(order, id=o1) or exists(order, id=o9)) and $n != 1", {"n": 2}, True),
    ("'a b' == $s", {"s": "a b"}, True),
    ("$now >= '2025-01-01T00:00:00'", {}, True),
])
def test_evaluate(text, params, want):
    node = C.parse(text)
    assert C.evaluate(node, STATE, params, now="2025-03-01T00:00:00") is want
    # canonical text parses to an equivalent condition
    again = C.parse(C.to_text(node))
    assert C.to_text(again) == C.to_text(node)
    assert C.evaluate(again, STATE, params, now="2025-03-01T00:00:00") is want


def test_before_and_after():
    node = C.parse("count(order) == before.count(order) + 1 and after.field(order, $o, status) == cancelled")
    assert [c.fn for c in C.before_calls(node)] == ["count"]
    before = C.evaluate_before(node, STATE, {"o": "o1"})
    assert list(before.values()) == [3]
    after = FakeState({"order": dict(STATE.t["order"], o4={"id": "o4", "status": "pending", "user": "u", "total": 0},
                                     o1=dict(STATE.t["order"]["o1"], status="cancelled"))})
    assert C.evaluate(node, after, {"o": "o1"}, before=before) is True
    assert C.evaluate(node, STATE, {"o": "o1"}, before=before) is False


def test_references():
    refs = C.references(C.parse("field(order, $o, status) == x and before.count(user, id=$u) > 0 and $result.id != $now"))
    assert refs.entities == {"order", "user"}
    assert refs.fields == {("order", "status"), ("user", "id")}
    assert refs.params == {"o", "u"}
    assert refs.result_fields == {"id"}
    assert refs.states == {"before"}
    assert refs.uses_now


@pytest.mark.parametrize("text,where", [
    ("exists(order, id=$o", "column 20"),
    ("field(order, $o) == 1", "expected ','"),
    ("$a ==", "expected a value"),
    ("$a = 1", "column 4"),
    ("exists(order, id=1, id=2)", "repeats"),
    ("before.len($x) == 1", "after 'before.'"),
    ("$a.b == 1", "only $result"),
    ("a == 1 1", "operator or the end"),
    ("x ~ y", "unexpected character '~'"),
    ("and == 1", "a value"),
])
def test_syntax_errors(text, where):
    with pytest.raises(C.ConditionSyntaxError) as ei:
        C.parse(text)
    assert where in str(ei.value)
    assert isinstance(ei.value, ValueError)


def test_eval_errors():
    with pytest.raises(C.ConditionEvalError, match="not a number"):
        C.evaluate(C.parse("$a + 1 > 0"), STATE, {"a": "text"})
    with pytest.raises(C.ConditionEvalError, match="not a list"):
        C.evaluate(C.parse("$a in $b"), STATE, {"a": 1, "b": 2})
    with pytest.raises(C.ConditionEvalError, match="cannot order"):
        C.evaluate(C.parse("$a < $b"), STATE, {"a": 1, "b": "x"})
