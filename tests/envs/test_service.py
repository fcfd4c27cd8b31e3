"""The environment service (longcat.envs.service.EnvService): episodes equal the synchronous
Environment's, hibernated environments wake with their state, a killed / hung / raising worker
loses nothing committed, bad input raises clear errors and leaks nothing, and the JSON-lines
front answers. One service (2 workers, 2 awake environments each) serves the whole module."""
import asyncio
import io
import json
import os

import pytest

from longcat.bench.envs_service import make_pairs
from longcat.envs.runtime import Environment
from longcat.envs.service import (EnvService, EpisodeStateError, HandleBusy, Overloaded,
                                  UnknownHandle)
from longcat.envs.service.host import EnvHost

FAULTY = "longcat.bench.envs_service:faulty_environment"


@pytest.fixture(scope="module")
def pairs():
    return make_pairs(domains=("retail",), per_domain=3)


@pytest.fixture(scope="module")
def loop():
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def svc(loop):
    s = EnvService(workers=2, live_per_worker=2, env_factory=FAULTY, step_timeout=2.0)
    loop.run_until_complete(s.start())
    yield s
    loop.run_until_complete(s.stop())


def gold(task, k):
    a = task["gold_actions"][k]
    return {"type": "tool_call", "name": a["name"], "arguments": a["arguments"]}


def replay(rec, task, actions):
    env = Environment(rec)
    env.reset(task)
    outs = [env.step(a) for a in actions]
    h = env.db_hash()
    env.close()
    return outs, h


def test_episode_equals_sync_environment(svc, loop, pairs):
    rec, task = pairs[0]

    async def go():
        h = await svc.open(rec, task)
        obs = await svc.reset(h)
        acts = [gold(task, k) for k in range(len(task["gold_actions"]))]
        acts.append({"type": "message", "content": "Done. " + "; ".join(
            str(r["info"]) for r in task.get("rubrics", []))})
        outs = [await svc.step(h, a) for a in acts]
        await svc.close(h)
        return obs, acts, outs
    obs, acts, outs = loop.run_until_complete(go())
    env = Environment(rec)
    assert obs == env.reset(task)
    assert [list(o) for o in outs] == [list(env.step(a)) for a in acts]
    assert outs[-1][2] and outs[-1][1] == 1.0   # the gold episode earns its reward


def test_hibernated_environments_keep_their_state(svc, loop, pairs):
    """8 environments, 4 awake slots: every step wakes one by replay; each ends in the state of
    its own sequential replay."""
    async def go():
        hs = [await svc.open(*pairs[i % len(pairs)]) for i in range(8)]
        for h in hs:
            await svc.reset(h)
        for k in range(2):
            await svc.step_many([(h, gold(pairs[i % len(pairs)][1], k % 2))
                                 for i, h in enumerate(hs)])
        await svc.step_many([(h, {"type": "message", "content": f"is {i} ok?"})
                             for i, h in enumerate(hs)])
        res = [(svc.committed(h), await svc.db_hash(h)) for h in hs]
        stats = await svc.worker_stats()
        for h in hs:
            await svc.close(h)
        return res, stats
    res, stats = loop.run_until_complete(go())
    assert all(s["live"] <= 2 for s in stats)
    for i, (actions, got) in enumerate(res):
        assert len(actions) == 3
        assert replay(*pairs[i % len(pairs)], actions)[1] == got


def test_noisy_environments_wake_like_a_sequential_replay(svc, loop, pairs):
    """Instruction and tool noise are pure functions of the task and the calls, so a noisy
    environment woken by replay sees what an uninterrupted one sees."""
    from longcat.envs.noise import NoiseConfig

    noise = NoiseConfig.all(0.7, seed=3)
    rec, task = pairs[0]
    acts = [gold(task, k % len(task["gold_actions"])) for k in range(4)]

    async def go():
        hs = [await svc.open(rec, task, noise=noise) for _ in range(6)]   # 4 awake slots
        first = [await svc.reset(h) for h in hs]
        outs = {h: [] for h in hs}
        for a in acts:
            for r, h in zip(await svc.step_many([(h, a) for h in hs]), hs):
                outs[h].append(list(r))
        hashes = [await svc.db_hash(h) for h in hs]
        for h in hs:
            await svc.close(h)
        return first, outs, hashes, hs
    first, outs, hashes, hs = loop.run_until_complete(go())
    env = Environment(rec, noise=noise)
    want_first = env.reset(task)
    want = [list(env.step(a)) for a in acts]
    for h, f, got in zip(hs, first, hashes):
        assert f == want_first and outs[h] == want and got == env.db_hash()


def test_killed_worker_loses_nothing_committed(svc, loop, pairs):
    rec, task = pairs[1]

    async def go():
        hs = [await svc.open(rec, task) for _ in range(4)]   # two per worker
        for h in hs:
            await svc.reset(h)
            await svc.step(h, gold(task, 0))
        victim = svc._handles[hs[0]].worker
        hang = asyncio.ensure_future(svc.step(hs[0], {"type": "tool_call", "name": "__hang__",
                                                      "arguments": {}}))
        await asyncio.sleep(0.3)
        restarts = svc.metrics()["worker_restarts"]
        svc.kill_worker(victim)
        in_flight = await hang
        after = [await svc.step(h, {"type": "message", "content": "what is my email?"})
                 for h in hs]
        hashes = [await svc.db_hash(h) for h in hs]
        logs = [svc.committed(h) for h in hs]
        for h in hs:
            await svc.close(h)
        return in_flight, after, hashes, logs, svc.metrics()["worker_restarts"] - restarts
    in_flight, after, hashes, logs, restarts = loop.run_until_complete(go())
    assert restarts == 1
    assert in_flight[3]["error"] == "worker_lost" and in_flight[0]["isError"]
    assert not any("error" in r[3] for r in after)
    for actions, got in zip(logs, hashes):
        assert len(actions) == 2
        outs, want = replay(rec, task, actions)
        assert got == want


def test_hanging_tool_times_out_and_worker_is_replaced(svc, loop, pairs):
    rec, task = pairs[0]

    async def go():
        h = await svc.open(rec, task)
        await svc.reset(h)
        await svc.step(h, gold(task, 0))
        before = await svc.db_hash(h)
        r = await svc.step(h, {"type": "tool_call", "name": "__hang__", "arguments": {}})
        again = await svc.step(h, gold(task, 1 % len(task["gold_actions"])))
        log = svc.committed(h)
        got = await svc.db_hash(h)
        await svc.close(h)
        return before, r, again, log, got
    before, r, again, log, got = loop.run_until_complete(go())
    assert r[3] == {"error": "timeout", "committed": False}
    assert "error" not in again[3] and len(log) == 2
    assert replay(rec, task, log)[1] == got
    assert replay(rec, task, log[:1])[1] == before


def test_raising_tool_leaves_state_unchanged(svc, loop, pairs):
    rec, task = pairs[0]

    async def go():
        h = await svc.open(rec, task)
        await svc.reset(h)
        await svc.step(h, gold(task, 0))
        before = await svc.db_hash(h)
        r = await svc.step(h, {"type": "tool_call", "name": "__raise__", "arguments": {}})
        after = await svc.db_hash(h)
        n = len(svc.committed(h))
        await svc.close(h)
        return before, r, after, n
    before, r, after, n = loop.run_until_complete(go())
    assert r[3]["error"] == "tool_raised" and "injected tool failure" in r[0]["content"]
    assert before == after and n == 1


def test_bad_input_raises_clear_errors(svc, loop, pairs):
    rec, task = pairs[0]

    async def go():
        with pytest.raises(UnknownHandle, match="handle: 999999"):
            await svc.step(999999, {"type": "message", "content": "hi"})
        with pytest.raises(UnknownHandle, match="handle"):
            await svc.reset("not-a-handle")
        with pytest.raises(ValueError, match="env_record"):
            await svc.open({"x": 1}, task)
        with pytest.raises(ValueError, match="task"):
            await svc.open(rec, ["no"])
        with pytest.raises(ValueError, match="noise"):
            await svc.open(rec, task, noise="loud")
        h = await svc.open(rec, task)
        with pytest.raises(EpisodeStateError, match="reset"):
            await svc.step(h, {"type": "message", "content": "hi"})
        await svc.reset(h)
        with pytest.raises(ValueError, match="action: expected a JSON object"):
            await svc.step(h, "drop table")
        with pytest.raises(ValueError, match="action: must be JSON"):
            await svc.step(h, {"type": "message", "content": object()})
        with pytest.raises(ValueError, match="max_action_bytes"):
            await svc.step(h, {"type": "message", "content": "x" * (svc.max_action_bytes + 1)})
        wrong = await svc.step(h, {"type": "dance"})   # a JSON object of the wrong shape
        assert wrong[0]["role"] == "error" and "action must be" in wrong[0]["content"]
        slow = asyncio.ensure_future(svc.step(h, {"type": "message", "content": "hi?"}))
        await asyncio.sleep(0)
        with pytest.raises(HandleBusy, match="in progress"):
            await svc.step(h, {"type": "message", "content": "again?"})
        await slow
        with pytest.raises(ValueError, match="appears twice"):
            await svc.step_many([(h, {"type": "message", "content": "a?"})] * 2)
        with pytest.raises(ValueError, match=r"calls\[0\]"):
            await svc.step_many([h])
        done = await svc.step(h, {"type": "message", "content": "All done: your request is complete."})
        assert done[2]
        with pytest.raises(EpisodeStateError, match="ended"):
            await svc.step(h, {"type": "message", "content": "hi"})
        await svc.close(h)
        with pytest.raises(UnknownHandle):
            await svc.step(h, {"type": "message", "content": "hi"})
        with pytest.raises(UnknownHandle):
            await svc.close(h)
        old = svc.max_open
        svc.max_open = len(svc._handles)
        try:
            with pytest.raises(Overloaded, match="max_open"):
                await svc.open(rec, task)
        finally:
            svc.max_open = old
    loop.run_until_complete(go())
    with pytest.raises(ValueError, match="workers"):
        EnvService(workers=0)
    with pytest.raises(ValueError, match="backend"):
        EnvService(backend="docker")
    with pytest.raises(ValueError, match="code_tools"):
        EnvService(code_tools=("bash",))
    with pytest.raises(ValueError, match="step_timeout"):
        EnvService(step_timeout=-1)


def test_disconnects_and_soak_leak_nothing(svc, loop, pairs):
    rec, task = pairs[0]

    async def client():
        async with svc.session() as s:
            h = await s.open(rec, task)
            await s.reset(h)
            await s.step(h, gold(task, 0))
            await asyncio.sleep(3600)   # the client hangs and is cut off

    async def cycle(i):
        if i % 5 == 0:
            t = asyncio.ensure_future(client())
            await asyncio.sleep(0.05)
            t.cancel()
            await asyncio.gather(t, return_exceptions=True)
        else:
            h = await svc.open(rec, task)
            await svc.close(h)

    async def go(n):
        sem = asyncio.Semaphore(16)

        async def one(i):
            async with sem:
                await cycle(i)
        await asyncio.gather(*(one(i) for i in range(n)))
        return await svc.worker_stats()
    loop.run_until_complete(go(50))
    fds = len(os.listdir("/proc/self/fd"))
    stats = loop.run_until_complete(go(400))
    assert len(svc._handles) == 0 and len(svc._objs) == 0
    assert sum(s["handles"] for s in stats) == 0 and sum(s["objects"] for s in stats) == 0
    assert len(os.listdir("/proc/self/fd")) == fds
    m = svc.metrics()
    assert m["open"] == 0 and m["opened"] >= 450 and m["closed"] == m["opened"]


def test_metrics(svc):
    m = svc.metrics()
    for k in ("workers", "workers_alive", "worker_restarts", "open", "in_episode", "inflight",
              "queued", "steps", "step_p50_ms", "step_p99_ms", "failures"):
        assert k in m
    assert m["workers_alive"] == 2 and m["steps"] > 0
    assert 0 < m["step_p50_ms"] <= m["step_p99_ms"]
    assert m["failures"].get("timeout", 0) >= 1 and m["failures"].get("tool_raised", 0) >= 1
    mem = svc.memory_bytes()
    assert mem["total"] > 0 and len(mem["workers"]) == 2


def test_json_lines_front(svc, loop, pairs):
    from longcat.envs.service.cli import format_metrics, serve

    rec, task = pairs[0]
    envs, tasks = {rec["env_id"]: rec}, {task["task_id"]: task}
    reqs = [{"id": 1, "op": "open", "env_id": rec["env_id"], "task_id": task["task_id"]}]
    inp = io.StringIO("\n".join(json.dumps(r) for r in reqs) + "\n")
    out, logs = [], []
    loop.run_until_complete(serve(svc, inp.readline, out.append, envs, tasks, log=logs.append))
    h = json.loads(out[0])["result"]
    assert isinstance(h, int) and h not in svc._handles   # closed when the input ended
    lines = [{"id": 1, "op": "open", "env": rec, "task": task}]
    inp = io.StringIO(json.dumps(lines[0]) + "\nnot json\n" +
                      json.dumps({"id": 3, "op": "fly"}) + "\n" +
                      json.dumps({"id": 4, "op": "step", "handle": -5, "action": {}}) + "\n" +
                      json.dumps({"id": 5, "op": "metrics"}) + "\n")
    out = []
    loop.run_until_complete(serve(svc, inp.readline, out.append, log=logs.append))
    got = {r["id"]: r for r in map(json.loads, out)}
    assert got[1]["ok"] and got[None]["error"] == "JSONDecodeError"
    assert "op" in got[3]["message"] and got[4]["error"] == "UnknownHandle"
    assert got[5]["result"]["workers"] == 2
    assert logs and logs[-1].startswith("[envs serve]")
    assert "step p50" in format_metrics(svc.metrics())


def test_code_tools_in_host(pairs):
    """The python / calculator tools through a worker's host, in-process (no service)."""
    from longcat.envs.service.sandbox import probe

    rec, task = pairs[0]
    host = EnvHost(live=2, allow_unsandboxed=not probe()[0])
    assert host.handle(("open", 1, "r", rec, "t", task, None, ("python", "calculator"), None))[0] == "ok"
    ok, obs = host.handle(("reset", 1))
    names = [t["function"]["name"] for t in obs["tools"]]
    assert names[-2:] == ["python", "calculator"]
    before = host.handle(("hash", 1))[1]
    r = host.handle(("step", 1, {"type": "tool_call", "name": "calculator",
                                 "arguments": {"expression": "6*7"}}))[1]
    assert r[0] == {"role": "tool", "name": "calculator", "content": "42", "isError": False}
    r = host.handle(("step", 1, {"type": "tool_call", "name": "python",
                                 "arguments": {"code": "print(2**10)"}}))[1]
    assert r[0]["content"].strip() == "1024" and not r[0]["isError"] and r[3]["code_tool"]
    r = host.handle(("step", 1, {"type": "tool_call", "name": "calculator",
                                 "arguments": {"expression": "__import__('os')"}}))[1]
    assert r[0]["isError"]
    assert host.handle(("hash", 1))[1] == before     # code tools never touch the database
    host.live_cap = 1
    host.handle(("open", 2, "r", None, "t", None, None, (), None))
    host.handle(("reset", 2))                        # evicts 1; its wake-up skips code calls
    assert host.handle(("hash", 1))[1] == before
    assert host.handle(("step", 7, {}))[:2] == ("err", "bad_request")


def test_serve_command_line(capsys, tmp_path):
    from longcat.cli import main

    with pytest.raises(SystemExit):
        main(["envs", "serve", "--help"])
    assert "--stats" in capsys.readouterr().out
    assert main(["envs", "serve", "--build", str(tmp_path)]) == 2
    assert "environments.jsonl" in capsys.readouterr().err
    assert main(["envs", "serve", "--stats", "-1"]) == 2
    assert "--stats" in capsys.readouterr().err
