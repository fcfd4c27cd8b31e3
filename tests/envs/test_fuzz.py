"""Property tests: no argument an agent can send, and no condition text a spec can hold, makes the
runtime or the parser raise; a failed call never changes the database."""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from longcat.envs import conditions as C
from longcat.envs import db
from longcat.envs.check import check_domain, make_rows
from longcat.envs.toolgen import ToolResult, ToolRuntime

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@pytest.fixture(scope="module")
def runtime(retail):
    conn = db.connect(retail)
    db.load(conn, retail, make_rows(retail, seed=5))
    yield ToolRuntime(retail, conn)
    conn.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_calls_never_raise(runtime, data):
    rt = runtime
    name = data.draw(st.sampled_from(list(rt.domain.tools) + ["nope", ""]))
    params = list(rt.domain.tools[name].params) if name in rt.domain.tools else []
    # mostly well-named arguments with arbitrary values, sometimes garbage keys or non-objects
    keys = st.sampled_from(params) if params else st.text(max_size=5)
    args = data.draw(st.one_of(st.dictionaries(keys, json_values, max_size=len(params) + 1),
                               json_values))
    h = db.db_hash(rt.conn, rt.domain)
    r = rt.call(name, args)
    assert isinstance(r, ToolResult)
    assert r.to_dict()["isError"] is r.is_error
    if r.is_error:
        assert db.db_hash(rt.conn, rt.domain) == h
    assert rt.stats.internal_errors == 0, rt.stats


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("()[],.=!<>+-*$'\" abcdefinorstxlu_0123")), max_size=40))
def test_parser_only_raises_syntax_errors(text):
    try:
        node = C.parse(text)
    except C.ConditionSyntaxError:
        return
    assert C.to_text(C.parse(C.to_text(node))) == C.to_text(node)


def test_check_is_deterministic(airline):
    a = check_domain(airline, seed=7).to_dict()
    b = check_domain(airline, seed=7).to_dict()
    assert a == b
