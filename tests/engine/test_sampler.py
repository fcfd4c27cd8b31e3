import math

import pytest
import torch

from longcat.engine.sampler import apply_filters, sample, validate_params
from longcat.engine.types import SamplingParams


def _filter(logits, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0):
    n = logits.shape[0]
    return apply_filters(logits, torch.full((n,), temperature), torch.full((n,), top_k),
                         torch.full((n,), top_p), torch.full((n,), min_p))


def _kept(filtered):
    return torch.isfinite(filtered).nonzero()[:, 1].tolist()


def test_top_k():
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0, 0.0]])
    assert sorted(_kept(_filter(logits, top_k=2))) == [1, 2]
    assert sorted(_kept(_filter(logits, top_k=0))) == [0, 1, 2, 3, 4]
    assert sorted(_kept(_filter(logits, top_k=-1))) == [0, 1, 2, 3, 4]
    assert sorted(_kept(_filter(logits, top_k=9))) == [0, 1, 2, 3, 4]


def test_top_p():
    probs = torch.tensor([[0.5, 0.05, 0.3, 0.15]])
    logits = probs.log()
    assert sorted(_kept(_filter(logits, top_p=0.5))) == [0]     # 0.5 reached by the first token
    assert sorted(_kept(_filter(logits, top_p=0.55))) == [0, 2]
    assert sorted(_kept(_filter(logits, top_p=0.8))) == [0, 2]  # 0.5 + 0.3 reaches 0.8
    assert sorted(_kept(_filter(logits, top_p=0.81))) == [0, 2, 3]
    assert sorted(_kept(_filter(logits, top_p=0.01))) == [0]    # the top token always stays
    # The kept tokens keep their relative probabilities.
    f = _filter(logits, top_p=0.81).softmax(-1)[0]
    assert torch.allclose(f[[0, 2, 3]], probs[0, [0, 2, 3]] / 0.95, atol=1e-6) and f[1] == 0


def test_min_p_and_temperature():
    probs = torch.tensor([[0.6, 0.25, 0.1, 0.05]])
    assert sorted(_kept(_filter(probs.log(), min_p=0.2))) == [0, 1]  # >= 0.2 * 0.6 = 0.12
    assert sorted(_kept(_filter(probs.log(), min_p=1.0))) == [0]
    # temperature 2 flattens: min_p then judges the scaled distribution.
    scaled = (probs.log() / 2).softmax(-1)
    kept = [i for i in range(4) if scaled[0, i] >= 0.2 * scaled[0].max()]
    assert sorted(_kept(_filter(probs.log(), temperature=2.0, min_p=0.2))) == kept
    assert torch.allclose(_filter(probs.log(), temperature=2.0), probs.log() / 2)


def test_filters_per_row():
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0], [1.0, 4.0, 3.0, 2.0]])
    f = apply_filters(logits, torch.ones(2), torch.tensor([1, 0]), torch.ones(2), torch.zeros(2))
    assert _kept(f[:1]) == [1] and len(_kept(f[1:])) == 4


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_greedy_and_raw_logprobs():
    logits = torch.randn(3, 50, generator=_gen(0))
    params = [SamplingParams(temperature=0, logprobs=3)] * 3
    out = sample(logits, params, [None] * 3)
    assert out.token_ids == logits.argmax(-1).tolist()
    ref = logits.log_softmax(-1)
    for i in range(3):
        assert math.isclose(out.logprobs[i], float(ref[i, out.token_ids[i]]), abs_tol=1e-6)
        assert out.top_ids[i] == ref[i].topk(3).indices.tolist()


def test_seeded_rows_are_batch_independent():
    logits = torch.randn(4, 100, generator=_gen(1))
    p = SamplingParams(temperature=1.0, top_p=0.9, seed=7)
    alone = sample(logits[2:3], [p], [_gen(7)]).token_ids[0]
    others = [SamplingParams(temperature=0.7)] * 4
    gens = [_gen(1), _gen(2), _gen(7), _gen(3)]
    mixed = sample(logits, others[:2] + [p] + others[3:], gens)
    assert mixed.token_ids[2] == alone
    # Reported logprobs are raw (before temperature / top-p): vLLM's raw_logprobs.
    assert math.isclose(mixed.logprobs[2], float(logits[2].log_softmax(-1)[alone]), abs_tol=1e-6)


def test_sampling_follows_the_distribution():
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0])
    logits = probs.log().expand(4000, 4).contiguous()
    g = _gen(0)
    out = sample(logits, [SamplingParams(temperature=1.0)] * 4000, [g] * 4000)
    counts = torch.bincount(torch.tensor(out.token_ids), minlength=4).float() / 4000
    assert torch.allclose(counts, probs, atol=0.03)
    out = sample(logits, [SamplingParams(temperature=1.0, top_k=1)] * 4000, [g] * 4000)
    assert set(out.token_ids) == {0}


@pytest.mark.parametrize("field,value", [("n", 0), ("temperature", -0.1), ("top_p", 0.0), ("top_p", 1.5),
                                         ("min_p", 1.1), ("max_tokens", 0), ("logprobs", 21), ("logprobs", -1),
                                         ("top_k", -2), ("seed", 1.5), ("stop", "abc"), ("stop", [""]),
                                         ("stop_token_ids", [-1]), ("temperature", float("nan"))])
def test_invalid_params_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"SamplingParams.{field}"):
        validate_params(SamplingParams(**{field: value}))


def test_valid_params_pass():
    validate_params(SamplingParams(n=3, temperature=0, top_p=1, top_k=-1, min_p=0, logprobs=20, stop=["x"]))
