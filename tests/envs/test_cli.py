import json

from longcat.cli import main


def test_envs_check_json(tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["envs", "check", "--domains", "airline", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "airline" in text and "conversion" in text
    rep = json.loads(out.read_text())
    d = rep["domains"][0]
    assert d["domain"] == "airline" and d["conversion_rate"] >= 0.95 and len(d["per_tool"]) == d["tools"]


def test_envs_check_fails_below_bar(tmp_path, capsys):
    # an impossible bar makes the command fail (exit 1) and say which domain
    assert main(["envs", "check", "--domains", "airline", "--min-rate", "1.01"]) == 1
    assert "below" in capsys.readouterr().out


def test_envs_show_and_graph(tmp_path, capsys):
    assert main(["envs", "show", "retail", "--tool", "cancel_pending_order"]) == 0
    t = json.loads(capsys.readouterr().out)
    assert t["name"] == "cancel_pending_order" and t["preconditions"]
    assert main(["envs", "show", "retail", "--tool", "cancel_pending_order", "--format", "mcp"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["inputSchema"]["type"] == "object"
    assert main(["envs", "show", "airline", "--format", "ddl"]) == 0
    assert 'CREATE TABLE "reservation"' in capsys.readouterr().out
    g = tmp_path / "g.json"
    assert main(["envs", "graph", "--domains", "retail,airline", "--json", str(g)]) == 0
    assert set(json.loads(g.read_text())) == {"retail", "airline"}


def test_envs_errors_are_messages(capsys):
    assert main(["envs", "check", "--domains", "atlantis"]) == 2
    err = capsys.readouterr().err
    assert "unknown domain(s) ['atlantis']" in err and "retail" in err
    assert main(["envs", "show", "retail", "--tool", "fly"]) == 2
    assert "no tool 'fly'" in capsys.readouterr().err
