"""Bad views at the C++ API (issue 10), argument by argument. Every array argument of every
longcat._C entry point, given a negative stride (a flipped numpy view) or no memory (a null data
pointer with elements), is refused with a ValueError that names the op and the argument, before
anything is written; outputs that partially overlap an input (shifted by one element) are refused;
the public torch wrappers refuse numpy arrays outright (torch tensors cannot have negative
strides, so no flipped view reaches _C through them). Complements test_safety.py."""
import ctypes
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from longcat import _C, ops

F32, I32, U8 = np.float32, np.int32, np.uint8


def _rand(shape, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) / 4).astype(F32)


def _plan(lens, workers=2):
    md = np.zeros((len(lens) + 1, 2), I32)
    _C.mla_decode_metadata(md, lens, 1, workers)
    return md


# ---- one valid call per entry point: (the op name its errors carry, arrays by argument name, call) ----

def _mla_decode():
    lens = np.array([100, 60], I32)
    a = dict(q=_rand((2, 1, 4, 576)), kv_cache=_rand((4, 64, 1, 576), 1), block_table=np.array([[0, 1], [2, 3]], I32),
             cache_seqlens=lens, metadata=_plan(lens),
             workspace=np.zeros(_C.mla_decode_workspace_size(2, 1, 4, 512, 2), U8),
             out=np.zeros((2, 1, 4, 512), F32), lse=np.zeros((2, 4, 1), F32))
    return a, lambda a: _C.mla_decode(a["out"], a["lse"], a["q"], a["kv_cache"], a["block_table"], a["cache_seqlens"],
                                      512, 0.05, True, a["metadata"], a["workspace"], 2)


def _mla_decode_metadata():
    a = dict(metadata=np.zeros((3, 2), I32), cache_seqlens=np.array([100, 60], I32))
    return a, lambda a: _C.mla_decode_metadata(a["metadata"], a["cache_seqlens"], 1, 2)


def _mla_decode_plan_splits():
    lens = np.array([100, 60], I32)
    a = dict(metadata=_plan(lens), cache_seqlens=lens)
    return a, lambda a: _C.mla_decode_plan_splits(a["metadata"], a["cache_seqlens"], 1, True)


def _mla_prefill():
    a = dict(q=_rand((6, 2, 32)), k=_rand((6, 2, 32), 1), v=_rand((6, 2, 16), 2), cu_seqlens_q=np.array([0, 2, 6], I32),
             cu_seqlens_k=np.array([0, 2, 6], I32), out=np.zeros((6, 2, 16), F32), lse=np.zeros((2, 6), F32))
    return a, lambda a: _C.mla_prefill(a["out"], a["lse"], a["q"], a["k"], a["v"], a["cu_seqlens_q"],
                                       a["cu_seqlens_k"], 4, 4, 0.2, True)


def _moe_grouped_swiglu():
    a = dict(x_perm=_rand((5, 8)), offsets=np.array([0, 2, 5], I32), w13=_rand((2, 8, 8), 1), w2=_rand((2, 8, 4), 2),
             out=np.zeros((5, 8), F32),
             workspace=np.zeros(_C.moe_grouped_swiglu_workspace_size(5, 8, 4, 2, "float32"), U8))
    return a, lambda a: _C.moe_grouped_swiglu(a["out"], a["x_perm"], a["offsets"], a["w13"], a["w2"], a["workspace"])


def _mla_gather():
    a = dict(out=np.zeros((8, 576), F32), kv_cache=_rand((4, 4, 1, 576)), block_table=np.array([[0, 1], [2, 3]], I32),
             cache_seqlens=np.array([5, 3], I32), cu_seqlens=np.array([0, 5, 8], I32))
    return a, lambda a: _C.mla_gather(a["out"], a["kv_cache"], a["block_table"], a["cache_seqlens"], a["cu_seqlens"])


def _mla_append_kv():
    a = dict(kv_cache=np.zeros((2, 4, 1, 576), F32), latent=_rand((3, 512)), rope_k=_rand((3, 64), 1),
             block_table=np.array([[0, 1], [1, 0]], I32), seq_ids=np.array([0, 1, 0], I32),
             positions=np.array([0, 5, 2], I32))
    return a, lambda a: _C.mla_append_kv(a["kv_cache"], a["latent"], a["rope_k"], a["block_table"], a["seq_ids"],
                                         a["positions"])


def _rope_interleaved():
    a = dict(out=np.zeros((3, 8), F32), x=_rand((3, 8)), positions=np.array([0, 4, 9], I32),
             inv_freq=np.array([1.0, 0.1, 0.01, 0.001], F32))
    return a, lambda a: _C.rope_interleaved(a["out"], a["x"], a["positions"], a["inv_freq"], False)


def _moe_dispatch_layout():
    a = dict(counts=np.zeros(2, I32), offsets=np.zeros(3, I32), topk_ids=np.array([[0, 1], [1, 0], [0, 1]], I32))
    return a, lambda a: _C.moe_dispatch_layout(a["counts"], a["offsets"], a["topk_ids"], 2)


def _pools(prefix, n, seed):
    return {f"{prefix}[{i}]": _rand((4, 2, 1, 576), seed + i) for i in range(n)}


def _kv_copy_blocks():
    a = dict(src_pool=_rand((4, 2, 1, 576)), dst_pool=np.zeros((4, 2, 1, 576), F32), src_ids=np.array([0, 2], I32),
             dst_ids=np.array([3, 1], I32))
    return a, lambda a: _C.kv_copy_blocks(a["src_pool"], a["dst_pool"], a["src_ids"], a["dst_ids"])


def _kv_copy_blocks_layers():
    a = {**_pools("src_pools", 2, 0), **_pools("dst_pools", 2, 5), "src_ids": np.array([0, 2], I32),
         "dst_ids": np.array([3, 1], I32)}
    return a, lambda a: _C.kv_copy_blocks_layers([a["src_pools[0]"], a["src_pools[1]"]],
                                                 [a["dst_pools[0]"], a["dst_pools[1]"]], a["src_ids"], a["dst_ids"])


def _kv_copy_queue():
    return {**_pools("src_pools", 2, 0), **_pools("dst_pools", 2, 5)}, _run_queue


def _kv_copy_queue_submit():
    return dict(src_ids=np.array([0, 2], I32), dst_ids=np.array([3, 1], I32)), _run_queue


def _run_queue(a):
    pools = {**_pools("src_pools", 2, 0), **_pools("dst_pools", 2, 5), **a}
    q = _C.KvCopyQueue([pools["src_pools[0]"], pools["src_pools[1]"]], [pools["dst_pools[0]"], pools["dst_pools[1]"]])
    try:
        for ticket in q.submit(a.get("src_ids", np.array([0], I32)), a.get("dst_ids", np.array([1], I32)), 1):
            q.wait(ticket)
    finally:
        q.close()


def _rms_norm():
    a = dict(out=np.zeros((6, 8), F32), x=_rand((6, 8)), weight=_rand(8, 1) + 1)
    return a, lambda a: _C.rms_norm(a["out"], a["x"], a["weight"], 1e-6)


def _fused_add_rms_norm():
    a = dict(out=np.zeros((6, 8), F32), residual_out=np.zeros((6, 8), F32), x=_rand((6, 8)), residual=_rand((6, 8), 1),
             weight=_rand(8, 2) + 1)
    return a, lambda a: _C.fused_add_rms_norm(a["out"], a["residual_out"], a["x"], a["residual"], a["weight"], 1e-6)


def _rms_norm_backward():
    a = dict(grad_x=np.zeros((6, 8), F32), grad_w_partial=np.zeros((2, 8), F32), grad_out=_rand((6, 8), 3),
             x=_rand((6, 8)), weight=_rand(8, 1) + 1)
    return a, lambda a: _C.rms_norm_backward(a["grad_x"], a["grad_w_partial"], a["grad_out"], a["x"], a["weight"], 1e-6)


def _linear():
    a = dict(out=np.zeros((3, 5), F32), x=_rand((3, 8)), weight=_rand((5, 8), 1))
    return a, lambda a: _C.linear(a["out"], a["x"], a["weight"])


def _moe_route():
    a = dict(topk_ids=np.zeros((5, 2), I32), topk_weights=np.zeros((5, 2), F32), hidden=_rand((5, 16)),
             weight=_rand((4, 16), 1), correction_bias=_rand(4, 2))
    return a, lambda a: _C.moe_route(a["topk_ids"], a["topk_weights"], a["hidden"], a["weight"], a["correction_bias"],
                                     4, 0, 1.0, "sigmoid")


def _moe_dispatch():
    a = dict(x_perm=np.zeros((4, 8), F32), row_token=np.zeros(4, I32), slot_row=np.zeros((4, 1), I32), x=_rand((4, 8)),
             topk_ids=np.array([[0], [1], [0], [1]], I32), counts=np.array([2, 2], I32),
             offsets=np.array([0, 2, 4], I32))
    return a, lambda a: _C.moe_dispatch(a["x_perm"], a["row_token"], a["slot_row"], a["x"], a["topk_ids"],
                                        a["counts"], a["offsets"], 2)


def _moe_combine():
    a = dict(y=np.zeros((4, 8), F32), expert_out=_rand((4, 8)),
             slot_row=np.array([[0, 1], [2, 3], [1, 0], [3, 2]], I32),
             topk_ids=np.array([[0, 1], [1, 0], [0, 1], [1, 0]], I32), topk_weights=_rand((4, 2), 1),
             x=_rand((4, 8), 2))
    return a, lambda a: _C.moe_combine(a["y"], a["expert_out"], a["slot_row"], a["topk_ids"], a["topk_weights"],
                                       a["x"], 2)


_WEIGHTS = ["w_a", "q_norm", "w_qb", "kv_norm", "w_uk_t", "w_uv", "w_o", "inv_freq"]


def _mla_decode_layer():
    H, R, NH, NOPE, V = 64, 48, 2, 32, 32
    lens = np.array([5, 20], I32)
    a = dict(w_a=_rand((R + 576, H), 1), q_norm=_rand(R, 2) + 1, w_qb=_rand((NH * (NOPE + 64), R), 3),
             kv_norm=_rand(512, 4) + 1, w_uk_t=_rand((NH, 512, NOPE), 5), w_uv=_rand((NH, V, 512), 6),
             w_o=_rand((H, NH * V), 7), inv_freq=(1e4 ** -(np.arange(0, 64, 2) / 64)).astype(F32),
             x=_rand((2, H)), out=np.zeros((2, H), F32), kv_cache=_rand((4, 16, 1, 576), 8),
             block_table=np.array([[0, 1], [2, 3]], I32), cache_seqlens=lens, positions=lens - 1,
             seq_ids=np.array([0, 1], I32), metadata=_plan(lens))
    a["workspace"] = np.zeros(_C.MlaLayerWeights(*(a[n] for n in _WEIGHTS), 1e-6).workspace_size(2, 2), U8)

    def call(a):
        w = _C.MlaLayerWeights(*(a[n] for n in _WEIGHTS), 1e-6)
        _C.mla_decode_layer(a["out"], a["x"], w, a["kv_cache"], a["block_table"], a["cache_seqlens"], a["positions"],
                            a["seq_ids"], 0.1, a["metadata"], a["workspace"], 2)
    return a, call


CASES = {  # entry point -> (the op its errors name, builder)
    "mla_decode": ("mla_decode", _mla_decode),
    "mla_decode_metadata": ("mla_decode_metadata", _mla_decode_metadata),
    "mla_decode_plan_splits": ("mla_decode", _mla_decode_plan_splits),
    "mla_prefill": ("mla_prefill", _mla_prefill),
    "moe_grouped_swiglu": ("moe_grouped_swiglu", _moe_grouped_swiglu),
    "mla_gather": ("mla_gather", _mla_gather),
    "mla_append_kv": ("mla_append_kv", _mla_append_kv),
    "rope_interleaved": ("rope_interleaved", _rope_interleaved),
    "moe_dispatch_layout": ("moe_dispatch_layout", _moe_dispatch_layout),
    "kv_copy_blocks": ("kv_copy_blocks", _kv_copy_blocks),
    "kv_copy_blocks_layers": ("kv_copy_blocks_layers", _kv_copy_blocks_layers),
    "KvCopyQueue": ("KvCopyQueue", _kv_copy_queue),
    "KvCopyQueue.submit": ("KvCopyQueue.submit", _kv_copy_queue_submit),
    "rms_norm": ("rms_norm", _rms_norm),
    "fused_add_rms_norm": ("fused_add_rms_norm", _fused_add_rms_norm),
    "rms_norm_backward": ("rms_norm_backward", _rms_norm_backward),
    "linear": ("linear", _linear),
    "moe_route": ("moe_route", _moe_route),
    "moe_dispatch": ("moe_dispatch", _moe_dispatch),
    "moe_combine": ("moe_combine", _moe_combine),
    "mla_decode_layer": ("mla_decode_layer", _mla_decode_layer),
}
ARGS = [(entry, name) for entry, (_, build) in CASES.items() for name in build()[0]]


def _flip(arr):
    """arr reversed along its first dimension of more than one element: a negative stride."""
    d = next(i for i, s in enumerate(arr.shape) if s > 1)
    return np.flip(arr, d)


_CTYPES = {np.dtype(F32): ctypes.c_float, np.dtype(I32): ctypes.c_int32, np.dtype(U8): ctypes.c_uint8}


def null_like(arr):
    """A buffer of arr's shape and dtype at address 0. Through memoryview: a bare ctypes array
    exports NULL strides, which nanobind's buffer import dereferences (a crash before _C runs)."""
    t = _CTYPES[arr.dtype]
    for s in reversed(arr.shape):
        t = t * s
    return memoryview(t.from_address(0))


@pytest.mark.parametrize("entry", list(CASES))
def test_valid_call_runs(entry):
    """The calls below differ from these in one argument only."""
    a, call = CASES[entry][1]()
    call(a)


@pytest.mark.parametrize("entry,name", ARGS, ids=[f"{e}-{n}" for e, n in ARGS])
def test_negative_stride(entry, name):
    op, build = CASES[entry]
    a, call = build()
    a[name] = _flip(a[name])
    before = {k: v.copy() for k, v in a.items()}
    want = rf"^{re.escape(op)}: argument '{re.escape(name)}' has a negative stride -\d+ in dimension"
    with pytest.raises(ValueError, match=want):
        call(a)
    for k, v in a.items():  # refused before anything is written (mla_decode_layer: before its cache append)
        np.testing.assert_array_equal(v, before[k], err_msg=f"{entry} wrote '{k}' before refusing '{name}'")


_NULL_SCRIPT = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("safety_views_cases", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
for entry, name in json.loads(sys.argv[2]):
    a, call = m.CASES[entry][1]()
    a[name] = m.null_like(a[name])
    try:
        call(a)
        got = ["accepted", ""]
    except Exception as e:
        got = [type(e).__name__, str(e)]
    print(json.dumps([entry, name] + got), flush=True)
"""


@pytest.fixture(scope="module")
def null_outcomes():
    """(entry, name) -> (exception type name, message) with that argument at address 0. In a
    subprocess, as a missing check segfaults: a crash is recorded for the case that had no
    answer, and the rest run in a fresh process."""
    todo, got = list(ARGS), {}
    while todo:
        proc = subprocess.run([sys.executable, "-c", _NULL_SCRIPT, __file__, json.dumps(todo)], capture_output=True,
                              text=True, timeout=300)
        for line in proc.stdout.splitlines():
            entry, name, kind, msg = json.loads(line)
            got[entry, name] = (kind, msg)
        todo = [c for c in todo if c not in got]
        if todo:
            got[todo[0]] = ("crash", f"exit code {proc.returncode}: {proc.stderr[-2000:]}")
            todo = todo[1:]
    return got


@pytest.mark.parametrize("entry,name", ARGS, ids=[f"{e}-{n}" for e, n in ARGS])
def test_null_data_pointer(entry, name, null_outcomes):
    op = CASES[entry][0]
    kind, msg = null_outcomes[entry, name]
    assert kind == "ValueError", (kind, msg)
    want = rf"{re.escape(op)}: argument '{re.escape(name)}' has a null data pointer but \d+ elements$"
    assert re.match(want, msg), msg


# ---- outputs that partially overlap an input -------------------------------------------------------

def _pairs(entry, outs, ins, extra=()):
    return [(entry, o, i) for o in outs for i in ins] + [(entry, o, i) for o, i in extra]


OVERLAPS = (_pairs("mla_decode", ["out", "lse", "workspace"],
                   ["q", "kv_cache", "block_table", "cache_seqlens", "metadata"],
                   [("lse", "out"), ("workspace", "out"), ("workspace", "lse")])
            + _pairs("mla_prefill", ["out", "lse"], ["q", "k", "v", "cu_seqlens_q", "cu_seqlens_k"], [("lse", "out")])
            + _pairs("moe_grouped_swiglu", ["out", "workspace"], ["x_perm", "offsets", "w13", "w2"],
                     [("workspace", "out")])
            + _pairs("moe_route", ["topk_ids", "topk_weights"], ["hidden", "weight", "correction_bias"],
                     [("topk_weights", "topk_ids")])
            + _pairs("rms_norm_backward", ["grad_x", "grad_w_partial"], ["grad_out", "x", "weight"],
                     [("grad_x", "grad_w_partial")]))


@pytest.mark.parametrize("entry,out_name,in_name", OVERLAPS, ids=[f"{e}-{o}-{i}" for e, o, i in OVERLAPS])
def test_output_overlapping_an_input_is_refused(entry, out_name, in_name):
    op, build = CASES[entry]
    a, call = build()
    src, out = a[in_name], a[out_name]
    # One buffer: the input's values at byte 0, the output from byte 4 (one element in) on.
    buf = np.zeros(max(src.nbytes, 4 + out.nbytes), U8)
    a[in_name] = buf[:src.nbytes].view(src.dtype).reshape(src.shape)
    a[in_name][...] = src
    a[out_name] = buf[4:4 + out.nbytes].view(out.dtype).reshape(out.shape)
    before = buf.copy()
    with pytest.raises(ValueError, match=rf"^{op}: argument '{out_name}' overlaps '{in_name}' in memory"):
        call(a)
    assert np.array_equal(buf, before), "nothing may be written when an output is refused"


# ---- the public wrappers take torch tensors only ----------------------------------------------------

def _i32(*values):
    return torch.tensor(values, dtype=torch.int32)


WRAPPERS = {  # a flipped numpy array in place of the first tensor argument, which the message names
    "mla_decode": ("q", lambda f: ops.mla_decode(f((2, 1, 4, 576)), torch.zeros(4, 64, 1, 576),
                                                  torch.zeros(2, 2, dtype=torch.int32), _i32(1, 1))),
    "mla_decode_metadata": ("cache_seqlens", lambda f: ops.mla_decode_metadata(f((2,), I32), 1)),
    "mla_prefill": ("q", lambda f: ops.mla_prefill(f((6, 2, 32)), torch.zeros(6, 2, 32), torch.zeros(6, 2, 16),
                                                    _i32(0, 6), _i32(0, 6), 6, 6)),
    "moe_grouped_swiglu": ("x_perm", lambda f: ops.moe_grouped_swiglu(f((5, 8)), _i32(0, 2, 5), torch.zeros(2, 8, 8),
                                                                       torch.zeros(2, 8, 4))),
    "mla_gather": ("kv_cache", lambda f: ops.mla_gather(f((4, 4, 1, 576)), torch.zeros(2, 2, dtype=torch.int32),
                                                         _i32(5, 3))),
    "rope_interleaved": ("x", lambda f: ops.rope_interleaved(f((3, 8)), torch.arange(3))),
    "kv_copy_blocks": ("src_pool", lambda f: ops.kv_copy_blocks(f((4, 2, 1, 576)), torch.zeros(4, 2, 1, 576),
                                                                 [0], [1])),
    "moe_route": ("hidden", lambda f: ops.moe_route(f((5, 16)), torch.zeros(4, 16), None, 2, 4, 0)),
}


@pytest.mark.parametrize("op", list(WRAPPERS))
def test_public_wrapper_refuses_a_numpy_view(op):
    name, call = WRAPPERS[op]
    with pytest.raises(TypeError, match=rf"^{op}: argument '{name}' must be a torch.Tensor, got ndarray"):
        call(lambda shape, dtype=F32: _flip(np.zeros(shape, dtype)))
