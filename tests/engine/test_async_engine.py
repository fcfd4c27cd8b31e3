"""AsyncEngine: streaming, cancellation, abort, weight updates between steps, bad input."""
import asyncio
import threading

import pytest
import torch
from toy_model import ToyPagedModel, greedy_reference

from longcat.engine import AsyncEngine, SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)


def _engine(model, **kw):
    kw.setdefault("page_size", 4)
    kw.setdefault("num_pages", 64)
    return AsyncEngine(model, **kw)


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=120))


async def _collect(engine, prompt, params=GREEDY, request_id=None):
    outs = []
    async for out in engine.generate(prompt, params, request_id):
        outs.append(out)
    return outs


def test_streams_cumulative_outputs_concurrently(toy):
    prompts = [[5, 6, 7], [9, 10, 11, 12, 13, 14], [20]]

    async def main():
        async with _engine(toy) as engine:
            return await asyncio.gather(*[_collect(engine, p) for p in prompts])

    for p, outs in zip(prompts, _run(main())):
        tokens = [o.outputs[0].token_ids for o in outs]
        assert all(len(a) < len(b) and b[:len(a)] == a for a, b in zip(tokens, tokens[1:]))
        assert [o.finished for o in outs] == [False] * (len(outs) - 1) + [True]
        assert tokens[-1] == greedy_reference(toy, p, 8)


def test_leaving_the_loop_or_cancelling_aborts(toy):
    async def main():
        async with _engine(toy) as engine:
            async for out in engine.generate([5, 6, 7], SamplingParams(temperature=0, max_tokens=200,
                                                                       ignore_eos=True), "early"):
                if len(out.outputs[0].token_ids) >= 2:
                    break
            task = asyncio.create_task(_collect(engine, [8, 9], SamplingParams(temperature=0, max_tokens=200,
                                                                                ignore_eos=True)))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            other = await _collect(engine, [3, 4, 5])  # the engine still serves
            for _ in range(100):
                if not engine.engine.requests:
                    break
                await asyncio.sleep(0.02)
            return other, engine.engine

    other, core = _run(main())
    assert other[-1].outputs[0].token_ids == greedy_reference(toy, [3, 4, 5], 8)
    assert not core.requests and core.allocator.num_free == core.num_pages


def test_abort_by_id_ends_the_stream(toy):
    async def main():
        async with _engine(toy) as engine:
            outs = []
            gen = engine.generate([5, 6], SamplingParams(temperature=0, max_tokens=500, ignore_eos=True), "a")
            async for out in gen:
                outs.append(out)
                if len(outs) == 2:
                    await engine.abort("a")
            return outs, engine.engine

    outs, core = _run(main())
    assert outs[-1].finished and outs[-1].outputs[0].finish_reason == "abort"
    assert len(outs[-1].outputs[0].token_ids) < 500
    assert core.allocator.num_free == core.num_pages


def test_update_weights_while_streaming(toy):
    """The third step waits in the model until both updates are queued behind it, so the switch
    lands after exactly three tokens however the step thread is scheduled (without the gate it
    could finish all twelve tokens before the consumer reads the second)."""
    model = ToyPagedModel(vocab_size=64, seed=0)
    new = ToyPagedModel(vocab_size=64, seed=1)
    state = {k: v.clone() for k, v in new.state_dict().items()}
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    gate, calls, forward = threading.Event(), [], model.forward_paged

    def gated_forward(batch, kv_caches):
        calls.append(None)
        if len(calls) == 3:
            assert gate.wait(60), "the test never opened the gate"
        return forward(batch, kv_caches)

    model.forward_paged = gated_forward

    async def main():
        async with _engine(model) as engine:
            outs = []
            async for out in engine.generate([5, 6, 7], params):
                outs.append(out)
                if len(outs) == 2:
                    while len(calls) < 3:  # the step thread holds in the third step
                        await asyncio.sleep(0.001)
                    bad = asyncio.create_task(
                        engine.update_weights({**state, "w_o": torch.zeros(2)}, version=1))
                    good = asyncio.create_task(engine.update_weights(state, version=1))
                    while engine._commands.qsize() < 2:
                        await asyncio.sleep(0.001)
                    gate.set()
                    with pytest.raises(ValueError, match="shape"):
                        await bad
                    await good
                    assert engine.version == 1
            return outs

    final = _run(main())[-1].outputs[0]
    assert final.versions == [0] * 3 + [1] * 9 and len(final.token_ids) == 12
    assert final.token_ids[3:] == greedy_reference(new, [5, 6, 7] + final.token_ids[:3], 9)


def test_bad_input(toy):
    async def main():
        async with _engine(toy, max_model_len=16) as engine:
            with pytest.raises(ValueError, match="SamplingParams.temperature"):
                await _collect(engine, [5], SamplingParams(temperature=-1))
            too_long = await _collect(engine, list(range(3, 40)))
            good = await _collect(engine, [5, 6])
            with pytest.raises(ValueError, match="already in use"):
                async for _ in engine.generate([5], GREEDY, "dup"):
                    await _collect(engine, [6], GREEDY, "dup")
            return too_long, good

    too_long, good = _run(main())
    assert len(too_long) == 1 and too_long[0].finished and "max_model_len" in too_long[0].error
    assert good[-1].outputs[0].token_ids == greedy_reference(toy, [5, 6], 8)


def test_a_failing_model_ends_every_stream_and_refuses_new_work():
    from longcat.engine import EngineDeadError

    model = ToyPagedModel(vocab_size=64)

    async def main():
        engine = _engine(model)
        await engine.start()
        first = await _collect(engine, [5, 6])  # healthy first
        assert engine.error is None

        def broken(batch, caches):
            raise RuntimeError("kernel exploded")

        model.forward_paged = broken
        with pytest.raises(EngineDeadError, match="kernel exploded"):
            await _collect(engine, [7, 8])
        assert isinstance(engine.error, RuntimeError)
        with pytest.raises(EngineDeadError):
            await _collect(engine, [9])
        await engine.shutdown()
        return first

    assert _run(main())[-1].finished
