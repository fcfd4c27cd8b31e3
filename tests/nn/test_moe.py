"""longcat.nn.MoE equals transformers' LongcatFlashMoE given the same weights, trains (gradients
equal transformers' autograd), and compiles with torch.compile(fullgraph=True)."""
import pytest
import torch

from longcat.nn import MoE, MoEConfig

transformers = pytest.importorskip("transformers")
from transformers import LongcatFlashConfig  # noqa: E402
from transformers.models.longcat_flash.modeling_longcat_flash import LongcatFlashMoE  # noqa: E402


def hf_moe(dtype, n_routed=8, n_zero=4, topk=3, seed=0):
    config = LongcatFlashConfig(hidden_size=64, expert_ffn_hidden_size=32, n_routed_experts=n_routed,
                                zero_expert_num=n_zero, moe_topk=topk, routed_scaling_factor=6.0,
                                num_layers=1, vocab_size=32)
    torch.manual_seed(seed)
    moe = LongcatFlashMoE(config)
    with torch.no_grad():
        moe.router.classifier.weight.normal_(0, 0.5)
        moe.router.e_score_correction_bias.normal_(0, 0.05)
        moe.experts.gate_up_proj.normal_(0, 0.1)
        moe.experts.down_proj.normal_(0, 0.1)
    return moe.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n_routed,n_zero,topk", [(8, 4, 3), (8, 0, 2), (16, 16, 12), (1, 4, 2)])
def test_equals_transformers(dtype, n_routed, n_zero, topk):
    # (transformers itself fails for moe_topk=1: its expert loop squeezes the k dimension away)
    hf = hf_moe(dtype, n_routed, n_zero, topk)
    ours = MoE.from_hf(hf)
    x = torch.randn(2, 9, 64).to(dtype)
    want, got = hf(x), ours(x)
    assert got.shape == want.shape and got.dtype == want.dtype
    # transformers adds each expert's bf16 output into a bf16 sum; we accumulate in fp32 and round
    # once, so bf16 results differ by bf16 rounding of the partial sums.
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(got, want, **tol)


def test_gradients_equal_transformers():
    hf = hf_moe(torch.float32)
    ours = MoE.from_hf(hf)
    x = torch.randn(11, 64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn(11, 64)
    hf(xa).backward(g)
    ours(xb).backward(g)
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.w13.grad, hf.experts.gate_up_proj.grad[:8], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.w2.grad, hf.experts.down_proj.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.router_weight.grad, hf.router.classifier.weight.grad, rtol=1e-4, atol=1e-5)


def test_trains():
    torch.manual_seed(0)
    moe = MoE(MoEConfig(hidden_size=32, expert_ffn_hidden_size=16, n_routed_experts=4, zero_expert_num=2,
                        moe_topk=2, routed_scaling_factor=1.0))
    moe.reset_parameters(0.2)
    x, target = torch.randn(64, 32), torch.randn(64, 32)
    opt = torch.optim.Adam(moe.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.mse_loss(moe(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_compile_fullgraph():
    torch._dynamo.reset()
    hf = hf_moe(torch.float32)
    ours = MoE.from_hf(hf)
    block = torch.nn.Sequential(torch.nn.Linear(64, 64), ours)
    x = torch.randn(7, 64)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager", dynamic=False)
    torch.testing.assert_close(compiled(x), block(x))


def test_config_errors():
    with pytest.raises(ValueError, match="'moe_topk' \\(13\\) exceeds the number of experts \\(12"):
        MoEConfig(n_routed_experts=8, zero_expert_num=4, moe_topk=13)
    with pytest.raises(ValueError, match="'hidden_size' must be >= 1"):
        MoEConfig(hidden_size=0)
