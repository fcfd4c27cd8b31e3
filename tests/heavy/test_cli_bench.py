"""``longcat heavy`` against a stub endpoint, and the benchmark's evaluation on a scripted backend."""
import json

import pytest

from longcat.bench.heavy import COLUMNS, interp_log, evaluate, plot
from longcat.cli import main
from longcat.tasks.arith import make_problems


def _arith_stub(body):
    prompt = body.get("prompt") or body["messages"][-1]["content"]
    question = prompt.split("[")[0].split("=")[0]
    truth = eval(question)
    if prompt.endswith("]="):
        return f"{truth}"
    return lambda i: str(truth + (i % 2))  # half the candidates are off by one


def test_cli_question_against_endpoint(stub_server, capsys):
    stub_server.answer = _arith_stub
    rc = main(["heavy", "12+7=", "--endpoint", stub_server.url, "--k", "3", "--template", "compact",
               "--answer-format", "arith", "--max-tokens", "8", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["answer"] == 19 and out["candidates"] == ["19", "20", "19"]
    assert stub_server.bodies[0]["n"] == 3 and stub_server.bodies[-1]["prompt"].startswith("12+7=[")


def test_cli_task_file_reports_accuracy(stub_server, tmp_path, capsys):
    stub_server.answer = _arith_stub
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"prompt": "3+4=", "answer": 7}\n{"prompt": "9-2=", "answer": 8}\n')
    rc = main(["heavy", "--task-file", str(tasks), "--endpoint", stub_server.url, "--k", "2",
               "--template", "compact", "--answer-format", "arith"])
    out = capsys.readouterr().out
    assert rc == 0 and "[right]" in out and "[wrong]" in out and "accuracy: 1/2" in out


def test_cli_bad_input(stub_server, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["heavy", "q", "--endpoint", stub_server.url, "--k", "0"])
    assert "--k" in capsys.readouterr().err
    assert main(["heavy", "--endpoint", stub_server.url]) == 2
    assert "question or --task-file" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"answer": 3}\n')
    assert main(["heavy", "--task-file", str(bad), "--endpoint", stub_server.url]) == 2
    assert "line 1" in capsys.readouterr().err
    assert main(["heavy", "q", "--endpoint", "http://127.0.0.1:9", "--timeout", "2"]) == 2
    assert "error" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--model is not used"):
        main(["bench", "norm", "--model", "x", "--quick"])


def test_bench_evaluate_rows_and_plot(fake, tmp_path):
    def respond(prompt, i, req):
        truth = eval(prompt.split("[")[0].split("=")[0])
        if prompt.endswith("]="):
            return str(truth)           # a perfect summary step
        return str(truth + (i % 3 == 1) * 5)  # a third of the samples wrong

    problems = make_problems(6, seed=0, max_operand=9)
    rows = evaluate(fake(respond), problems, vote_ks=(1, 2, 4), heavy_ks=(2, 4), heavy_rounds=(1, 2), logprobs=1)
    methods = {(r["method"], r["k"], r["rounds"]) for r in rows}
    assert {("single", 1, 0), ("single (greedy)", 1, 0), ("self-consistency", 4, 0), ("confidence-vote", 2, 0), ("heavy", 2, 1),
            ("heavy", 4, 2)} <= methods
    heavy = [r for r in rows if r["method"] == "heavy"]
    assert all(r["accuracy"] == 1.0 for r in heavy)
    sc2 = next(r for r in rows if r["method"] == "self-consistency" and r["k"] == 2)
    h2 = next(r for r in heavy if r["k"] == 2 and r["rounds"] == 1)
    assert h2["gen_tokens"] == sc2["gen_tokens"] + 1  # the summary's one token on top of the same candidates
    assert all(set(COLUMNS) - {"sc_acc_at_equal_tokens", "delta_vs_sc"} <= set(r) for r in rows)
    assert all("delta_vs_sc" in r for r in heavy)
    plot(rows, str(tmp_path / "heavy.png"), "test")
    assert (tmp_path / "heavy.png").stat().st_size > 1000


def test_interp_log():
    pts = [(1.0, 0.2), (4.0, 0.6)]
    assert interp_log(pts, 2.0) == pytest.approx(0.4)
    assert interp_log(pts, 0.5) == 0.2 and interp_log(pts, 9.0) == 0.6
