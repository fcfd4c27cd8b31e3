import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from longcat.sft import SFTConfig, latest_checkpoint, train
from longcat.sft.trainer import _batch, _loss_sum, load_dataset, lr_at, pack, resolve_dtype, truncate_at_turn


def _conv(i):
    return {"messages": [{"role": "system", "content": "Agent."}, {"role": "user", "content": f"Order W{i}?"},
                         {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function", "function": {
                             "name": "get_order", "arguments": json.dumps({"order_id": f"W{i}"})}}]},
                         {"role": "tool", "tool_call_id": "c", "content": f"{{\"status\": \"s{i % 3}\"}}"},
                         {"role": "assistant", "content": f"The status is s{i % 3}."}]}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from longcat.models.random_init import init_checkpoint

    root = tmp_path_factory.mktemp("sft")
    ckpt = init_checkpoint(root / "init", "tiny", seed=0, max_position_embeddings=1024)
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(_conv(i)) + "\n" for i in range(24)))
    return root, ckpt, data


CFG = dict(seq_len=256, grad_accum=1, lr=3e-3, warmup_steps=2, dtype="float32", save_every=2)


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


def test_pack_and_schedule():
    docs = [([1] * n, [1] * n) for n in (5, 9, 3, 7, 2)]
    rows = pack(docs, 10)
    assert sorted(i for r in rows for i in r) == list(range(5))
    assert all(sum(len(docs[i][0]) for i in r) <= 10 for r in rows) and len(rows) == 3
    cfg = SFTConfig(lr=1.0, warmup_steps=4, min_lr_ratio=0.1)
    assert [lr_at(s, 20, cfg) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(19, 20, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 15 / 16)).item()))
    timed = SFTConfig(lr=1.0, warmup_steps=4, min_lr_ratio=0.1, max_seconds=10.0)
    # a time budget moves the cosine by the time fraction when that is further along than the steps
    assert lr_at(4, 1000, timed, elapsed=0.0) == pytest.approx(1.0)
    assert lr_at(4, 1000, timed, elapsed=5.0) == pytest.approx(0.55)
    assert lr_at(4, 1000, timed, elapsed=12.0) == pytest.approx(0.1)
    assert lr_at(4, 1000, cfg, elapsed=12.0) == pytest.approx(1.0)      # no budget: steps only
    with pytest.raises(ValueError, match="seq_len"):
        SFTConfig(seq_len=0)


def test_dtype_auto_is_bfloat16_only_where_the_cpu_multiplies_it_natively():
    native = torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert resolve_dtype("auto") == (torch.bfloat16 if native else torch.float32)
    assert resolve_dtype("bfloat16") == torch.bfloat16 and resolve_dtype("float32") == torch.float32
    assert SFTConfig().dtype == "auto"
    with pytest.raises(ValueError, match="dtype.*'auto'.*'float16'"):
        SFTConfig(dtype="float16")


def test_truncate_cuts_after_the_last_whole_assistant_turn(setup):
    #        sys  sys  asst asst usr  asst asst asst
    mask = [0, 0, 1, 1, 0, 1, 1, 1]
    ids = list(range(8))
    assert truncate_at_turn(ids, mask, 8) == (ids, mask)
    assert truncate_at_turn(ids, mask, 7) == (ids[:4], mask[:4])      # the second turn does not fit whole
    assert truncate_at_turn(ids, mask, 4) == (ids[:4], mask[:4])
    assert truncate_at_turn(ids, mask, 3) is None
    root, ckpt, _ = setup
    from longcat.engine.llm import load_tokenizer

    tok = load_tokenizer(None, str(ckpt))
    long = root / "long.jsonl"
    conv = _conv(1)
    conv["messages"] += [{"role": "user", "content": "more " * 300}, {"role": "assistant", "content": "ok"}]
    long.write_text(json.dumps(conv) + "\n")
    cfg = SFTConfig(**{**CFG, "seq_len": 200})
    assert load_dataset([long], tok, cfg) == ([], 1, 0, 0)
    docs, dropped, cut, _ = load_dataset([long], tok, SFTConfig(**{**CFG, "seq_len": 200, "truncate": True}))
    assert (dropped, cut) == (0, 1)
    (ids, mask), = docs
    assert len(ids) <= 200 and mask[-1] == 1
    text = tok.decode(ids, skip_special_tokens=False)
    assert text.endswith("<|im_end|>") and "The status is s1." in text and "more" not in text


def test_max_tier_keeps_the_easiest_tiers_and_names_a_trajectory_without_one(setup):
    root, ckpt, _ = setup
    from longcat.engine.llm import load_tokenizer

    tok = load_tokenizer(None, str(ckpt))
    data = root / "tiers.jsonl"
    data.write_text("".join(json.dumps({**_conv(i), "tier": t}) + "\n" for i, t in enumerate((2, 3, 2, 5))))
    docs, dropped, cut, above = load_dataset([data], tok, SFTConfig(**CFG, max_tier=2))
    assert (len(docs), dropped, cut, above) == (2, 0, 0, 2)
    everything = load_dataset([data], tok, SFTConfig(**CFG))
    assert len(everything[0]) == 4 and everything[3] == 0
    assert [d[0] for d in docs] == [everything[0][0][0], everything[0][2][0]]   # the tier-2 ones, in order
    untiered = root / "untiered.jsonl"
    untiered.write_text(json.dumps({**_conv(0), "tier": 2}) + "\n" + json.dumps(_conv(1)) + "\n")
    with pytest.raises(ValueError, match=r"untiered\.jsonl:2: max_tier=2 needs each trajectory's 'tier'.*got None"):
        load_dataset([untiered], tok, SFTConfig(**CFG, max_tier=2))
    assert len(load_dataset([untiered], tok, SFTConfig(**CFG))[0]) == 2      # no max_tier: no tier needed
    with pytest.raises(ValueError, match=r"no trajectory.*\(0 longer, 4 above max_tier=1\)"):
        train(data, ckpt, root / "tier-none", SFTConfig(**CFG, max_tier=1), progress=False)
    for bad in (0, True, 2.0):
        with pytest.raises(ValueError, match="SFTConfig.max_tier"):
            SFTConfig(max_tier=bad)


def test_packed_loss_equals_separate_losses(setup):
    """The block-diagonal mask: two packed conversations cost what they cost alone."""
    from longcat.models import LongcatFlashForCausalLM

    _, ckpt, _ = setup
    model = LongcatFlashForCausalLM.from_pretrained(str(ckpt))
    docs = [([1, 5, 9, 14, 20, 3], [0, 0, 1, 1, 1, 1]), ([1, 7, 7, 30, 2], [0, 1, 1, 0, 1])]
    packed = _loss_sum(model, *_batch(docs, [[0, 1]], 16, 0))
    alone = sum(_loss_sum(model, *_batch(docs, [[i]], 16, 0)) for i in range(2))
    torch.testing.assert_close(packed, alone, rtol=1e-5, atol=1e-5)
    # the context loss: the other tokens' labels, added with their weight; the assistant part alone
    ids, labels, doc, ctx = _batch(docs, [[0, 1]], 16, 0, context=True)
    assert set(((labels != -100) & (ctx != -100)).flatten().tolist()) == {False}
    assert int((ctx != -100).sum()) == 2          # the other tokens, not first of their doc: 1 + 1
    total, assistant = _loss_sum(model, ids, labels, doc, ctx, 0.25)
    torch.testing.assert_close(assistant, packed, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(total, packed + 0.25 * _loss_sum(model, ids, ctx, doc), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="context_weight"):
        SFTConfig(context_weight=2.0)


def test_context_weight_keeps_the_learning_rate_schedule(setup, tmp_path):
    """Regression: the weighted loss once reused the name of the run's step count, so after
    warm-up every step of a --context-weight run took the schedule's lowest rate."""
    _, ckpt, data = setup
    lrs = {}
    for w in (0.0, 0.5):
        train(data, ckpt, tmp_path / str(w), SFTConfig(**{**CFG, "context_weight": w, "max_steps": 6}), progress=False)
        lines = (tmp_path / str(w) / "metrics.jsonl").read_text().splitlines()
        lrs[w] = [json.loads(x)["lr"] for x in lines]
    assert len(lrs[0.5]) == 6
    assert lrs[0.5] == pytest.approx(lrs[0.0])
    assert lrs[0.5][2] == pytest.approx(lr_at(2, 6, SFTConfig(**{**CFG, "max_steps": 6})))


def test_packed_loss_matches_the_model_forward(setup):
    """Per-document attention and labelled-only logits give the model's own full-sequence loss."""
    from longcat.models import LongcatFlashForCausalLM

    _, ckpt, _ = setup
    model = LongcatFlashForCausalLM.from_pretrained(str(ckpt))
    g = torch.Generator().manual_seed(0)
    docs = []
    for n in (7, 12, 3, 9):
        ids = torch.randint(3, 200, (n,), generator=g).tolist()
        mask = (torch.rand(n, generator=g) < 0.6).long().tolist()
        mask[-1] = 1
        docs.append((ids, mask))
    expected = 0.0
    for ids, mask in docs:
        lab = torch.tensor(ids)
        lab[torch.tensor(mask) == 0] = -100
        lab[0] = -100
        expected += model(torch.tensor([ids]), labels=lab[None]) * int((lab[1:] != -100).sum())
    got = _loss_sum(model, *_batch(docs, [[0, 2], [1, 3]], 24, 0))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


def test_train_checkpoint_resume_is_the_same_run(setup):
    root, ckpt, data = setup
    straight = train(data, ckpt, root / "straight", SFTConfig(**CFG, max_steps=3), progress=False)
    assert straight.steps == 3 and straight.final_loss < straight.history[0]["loss"]
    assert (straight.checkpoint_dir / "config.json").is_file() and (straight.checkpoint_dir / "tokenizer.json").is_file()
    # interrupted after 2 steps, then resumed: nothing trained twice, same weights
    first = train(data, ckpt, root / "resumed", SFTConfig(**CFG, max_steps=2), progress=False)
    assert first.steps == 2
    again = train(data, ckpt, root / "resumed", SFTConfig(**CFG, max_steps=3), progress=False)
    assert again.resumed_from == 2 and again.steps == 3
    steps = [json.loads(l)["step"] for l in (root / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    a, b = _weights(straight.checkpoint_dir), _weights(again.checkpoint_dir)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    # no temporary folders left; the engine loads the result
    assert not list((root / "resumed").glob(".tmp-*"))
    from longcat.engine import LLM, SamplingParams

    out = LLM(str(again.checkpoint_dir)).generate([[1, 5, 9]], SamplingParams(max_tokens=3, temperature=0))
    assert len(out[0].outputs[0].token_ids) == 3


def test_checkpoint_of_another_shape_is_refused(setup, tmp_path):
    import shutil

    root, ckpt, data = setup
    train(data, ckpt, tmp_path / "run", SFTConfig(**CFG, max_steps=2), progress=False)
    other = shutil.copytree(ckpt, tmp_path / "other")          # the same model with another context length
    cfg = json.loads((other / "config.json").read_text())
    cfg["max_position_embeddings"] = 512
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="another model shape.*max_position_embeddings"):
        train(data, other, tmp_path / "run", SFTConfig(**CFG, max_steps=4), progress=False)
    assert latest_checkpoint(tmp_path / "run").name == "checkpoint-000002"


def test_bad_data_names_file_and_line(setup, tmp_path):
    _, ckpt, _ = setup
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(_conv(0)) + "\n" + json.dumps({"messages": [{"role": "user", "content": "x"}]}) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: the conversation has no assistant turn"):
        train(bad, ckpt, tmp_path / "o", SFTConfig(**CFG, max_steps=1), progress=False)
    with pytest.raises(ValueError, match="model: expected a checkpoint folder"):
        train(bad, tmp_path, tmp_path / "o", SFTConfig(**CFG, max_steps=1), progress=False)


_DDP = """
import sys, json
from longcat.sft import SFTConfig, train
budget = float(sys.argv[5]) if len(sys.argv) > 5 else None
cfg = SFTConfig(seq_len=256, micro_batch=1, grad_accum=int(sys.argv[4]), lr=3e-3, warmup_steps=2,
                dtype="float32", save_every=2 if budget is None else 1000, max_steps=2 if budget is None else 10000,
                epochs=1000, max_seconds=budget)
r = train(sys.argv[1], sys.argv[2], sys.argv[3], cfg, progress=False)
print("steps", r.steps, flush=True)
"""


def test_data_parallel_under_torchrun_matches_one_process(setup, tmp_path):
    """2 gloo ranks with grad_accum 1 see the same rows per step as 1 process with grad_accum 2."""
    root, ckpt, data = setup
    script = tmp_path / "ddp.py"
    script.write_text(_DDP)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29731",
           str(script), str(data), str(ckpt), str(tmp_path / "ddp"), "1"]
    subprocess.run(cmd, check=True, env=env, timeout=240, capture_output=True)
    subprocess.run([sys.executable, str(script), str(data), str(ckpt), str(tmp_path / "one"), "2"], check=True,
                   env=env, timeout=240, capture_output=True)
    a, b = _weights(tmp_path / "ddp" / "final"), _weights(tmp_path / "one" / "final")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_data_parallel_ranks_stop_after_the_same_step_under_a_time_budget(setup, tmp_path):
    """Under max_seconds the ranks agree on the clock (it sets the learning rate and the stop):
    both end at the same step, and rank 0's final checkpoint is that step."""
    root, ckpt, data = setup
    script = tmp_path / "ddp.py"
    script.write_text(_DDP)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29733",
           str(script), str(data), str(ckpt), str(tmp_path / "ddp"), "1", "3"]
    out = subprocess.run(cmd, check=True, env=env, timeout=240, capture_output=True, text=True).stdout
    steps = [int(line.split()[-1]) for line in out.splitlines() if line.startswith("steps")]
    assert len(steps) == 2 and steps[0] == steps[1] > 1, out
    assert latest_checkpoint(tmp_path / "ddp").name == f"checkpoint-{steps[0]:06d}"
    rows = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == steps[0] and rows[-1]["lr"] < rows[2]["lr"]   # the clock moved the cosine down
