"""``longcat heavy`` against a stub endpoint, and the benchmark's evaluation on a scripted backend."""
import json

import pytest

import math

from longcat.bench.heavy import COLUMNS, compare_to_sc, evaluate, interp_log, paired_delta, plot
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
    with pytest.raises(SystemExit, match="--summary-model is not used"):
        main(["bench", "norm", "--summary-model", "x", "--quick"])
    with pytest.raises(SystemExit, match="--lr is not used"):
        main(["bench", "norm", "--lr", "1e-3", "--quick"])
    for bad in ("0", "-1e-3", "nan", "2", "fast"):
        with pytest.raises(SystemExit):
            main(["bench", "copy_learning", f"--lr={bad}", "--quick"])
        assert "--lr: expected a learning rate in (0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--optimizer is not used"):
        main(["bench", "norm", "--optimizer", "muon", "--quick"])
    with pytest.raises(SystemExit, match="--steps is not used"):
        main(["bench", "norm", "--steps", "10", "--quick"])
    for bad in ("0", "-3", "1.5", "100001"):
        with pytest.raises(SystemExit):
            main(["bench", "copy_learning", f"--steps={bad}", "--quick"])
        assert "--steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "copy_learning", "--optimizer", "sgd", "--quick"])
    assert "--optimizer: invalid choice" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--summary-model: expected a checkpoint folder"):
        main(["bench", "heavy", "--model", "x", "--summary-model", str(tmp_path / "none"), "--quick"])


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
    assert all(set(COLUMNS) - {"sc_acc_at_equal_tokens", "delta_vs_sc", "delta_se", "delta_ci95",
                                  "delta_vs_sc_more_tokens"} <= set(r) for r in rows)
    assert all("delta_vs_sc" in r for r in heavy)
    # A perfect summary against a vote that misses a third: every paired delta is >= 0.
    assert all(r["delta_vs_sc"] >= 0 and r["delta_se"] >= 0 and "delta_ci95" in r for r in heavy)
    plot(rows, str(tmp_path / "heavy.png"), "test")
    assert (tmp_path / "heavy.png").stat().st_size > 1000


def test_bench_evaluate_with_a_separate_summary_policy(fake):
    """Candidates from one policy, the summary step on another: the summary prompts go only to the
    summary policy, and a summary that re-checks the candidates lifts heavy above the vote."""
    def candidates(prompt, i, req):
        assert not prompt.endswith("]="), "the candidate policy must not run the summary step"
        truth = eval(prompt.split("=")[0])
        return str(truth + (i % 2 == 0) * 5)  # half the samples wrong, and the wrong one comes first

    def summary(prompt, i, req):
        assert prompt.endswith("]=")
        return str(eval(prompt.split("[")[0].split("=")[0]))

    problems = make_problems(6, seed=0, max_operand=9)
    cand_policy, summary_policy = fake(candidates), fake(summary)
    rows = evaluate(cand_policy, problems, vote_ks=(1, 2, 4), heavy_ks=(2, 4), heavy_rounds=(1,), logprobs=1,
                    summary_backend=summary_policy)
    heavy = [r for r in rows if r["method"] == "heavy"]
    assert summary_policy.requests and all(r.prompt.endswith("]=") for r in summary_policy.requests)
    assert all(r["accuracy"] == 1.0 and r["delta_vs_sc"] > 0 for r in heavy)


def test_interp_log():
    pts = [(1.0, 0.2), (4.0, 0.6)]
    assert interp_log(pts, 2.0) == pytest.approx(0.4)
    assert interp_log(pts, 0.5) == 0.2 and interp_log(pts, 9.0) == 0.6


def test_paired_delta():
    p = paired_delta([1, 1, 0, 0], [0, 1, 0, 1])
    assert p["delta"] == 0 and p["se"] == pytest.approx(math.sqrt(2 / 3) / 2)
    assert p["ci95"][0] < 0 < p["ci95"][1]
    same = paired_delta([1, 0, 1], [1, 0, 1])
    assert same == {"delta": 0.0, "se": 0.0, "ci95": (0.0, 0.0)}
    win = paired_delta([1] * 50 + [0] * 50, [0] * 30 + [1] * 20 + [0] * 50)
    assert win["delta"] == pytest.approx(0.3) and win["ci95"][0] > 0 and win["delta"] > 2 * win["se"]


def test_compare_to_sc_interpolates_per_problem():
    def row(method, tokens, correct, k=1):
        return {"method": method, "k": k, "rounds": 0, "gen_tokens": tokens, "accuracy": sum(correct) / len(correct),
                "_correct": correct}

    single = row("single", 2.0, [1, 0, 0, 0])
    sc4 = row("self-consistency", 8.0, [1, 1, 0, 0], 4)
    heavy = row("heavy", 4.0, [1, 1, 1, 0], 2)       # halfway between 2 and 8 tokens in log scale
    cheap = row("heavy", 1.0, [0, 0, 0, 0], 2)       # below the curve: compared with its first point
    costly = row("heavy", 16.0, [1, 1, 1, 1], 8)     # above the curve: no SC row spends as much
    rows = [single, sc4, heavy, cheap, costly]
    compare_to_sc(rows)
    pts = [(2.0, 0.25), (8.0, 0.5)]
    assert heavy["sc_acc_at_equal_tokens"] == pytest.approx(interp_log(pts, 4.0)) == pytest.approx(0.375)
    assert heavy["delta_vs_sc"] == pytest.approx(0.75 - 0.375) and heavy["delta_vs_sc_more_tokens"] == 0.25
    assert cheap["delta_vs_sc"] == pytest.approx(-0.25) and cheap["delta_vs_sc_more_tokens"] == -0.25
    assert costly["delta_vs_sc"] == pytest.approx(0.5) and costly["delta_vs_sc_more_tokens"] is None
    assert "delta_se" not in single and "delta_se" not in sc4


def test_quick_bench_on_a_checkpoint_end_to_end(tmp_path):
    """``longcat bench heavy --quick --model CKPT`` on a random tiny checkpoint whose
    summary_tune.json names the family, the layout and the candidate temperature: the table with
    the paired comparison, the JSON and the plot (accuracies near 0: the model is untrained)."""
    import torch

    from longcat.models.random_init import init_checkpoint

    torch.set_num_threads(1)
    ckpt = init_checkpoint(tmp_path / "ckpt", "tiny", seed=0)
    (ckpt / "summary_tune.json").write_text(json.dumps({"config": {"eval_max_operand": 9, "n_terms": 3,
                                                                   "template": "compact", "temperature": 0.7}}))
    assert main(["bench", "heavy", "--quick", "--model", str(ckpt), "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "heavy.json").read_text())
    assert result["context"]["family"] == {"max_operand": 9, "n_terms": 3, "template": "compact", "temperature": 0.7}
    heavy = [r for r in result["rows"] if r["method"] == "heavy"]
    assert len(heavy) == 6 and all(r["delta_se"] >= 0 and ".." in r["delta_ci95"] for r in heavy)
    assert "heavy_beats_sc_by_2se" in result["context"] and (tmp_path / "out" / "heavy.png").stat().st_size > 1000
