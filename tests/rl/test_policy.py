"""EnginePolicy: the built-in engine as a multi-version policy. A trajectory pinned to a version
keeps generating with that version's weights after an update; versions retire when released."""
import asyncio

import pytest
import torch

from longcat.models import LongcatFlashConfig, LongcatFlashForCausalLM
from longcat.rl.policy import EnginePolicy
from longcat.rl.protocols import Policy


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return LongcatFlashForCausalLM(LongcatFlashConfig.from_preset("tiny"), dtype=torch.float32)


def _policy(model):
    return EnginePolicy(model, sampling=dict(max_tokens=4, ignore_eos=True, seed=7),
                        engine_args=dict(max_model_len=32, max_num_seqs=8))


def _perturbed(model):
    return {k: v.detach().clone() + 0.05 for k, v in model.hf_state_dict().items()}


def test_pinned_version_survives_update_and_logprobs_match_weights(model):
    async def main():
        policy = _policy(model)
        assert isinstance(policy, Policy)
        old = policy.acquire_version()
        before = await policy.generate([5, 6, 7], 2, old)
        await policy.update_weights(_perturbed(model), 1)
        assert policy.live_versions == [0, 1]
        again = await policy.generate([5, 6, 7], 2, old)  # still version 0's weights
        new = policy.acquire_version()
        fresh = await policy.generate([5, 6, 7], 2, new)
        policy.release_version(old)
        assert policy.live_versions == [1]  # version 0 retired once released
        policy.release_version(new)
        await policy.close()
        return before, again, fresh

    before, again, fresh = asyncio.run(main())
    assert all(s.versions == [0] * 4 for s in before + again) and all(s.versions == [1] * 4 for s in fresh)
    # same seed, same weights: identical; the new weights give other logprobs
    assert [s.logprobs for s in before] == [s.logprobs for s in again]
    assert [s.logprobs for s in fresh] != [s.logprobs for s in before]
    # the engine's logprobs are the model's own (what TIS compares against)
    s = before[0]
    ids = torch.tensor([s.prompt_ids + s.completion_ids])
    with torch.no_grad():
        logp = model(ids).float().log_softmax(-1)[0, 2:-1].gather(-1, ids[0, 3:, None])[:, 0]
    assert torch.allclose(logp, torch.tensor(s.logprobs), atol=1e-4)


def test_unpinned_version_is_refused(model):
    async def main():
        policy = _policy(model)
        try:
            with pytest.raises(ValueError, match="version 3 is not live"):
                await policy.generate([5], 1, 3)
            with pytest.raises(ValueError, match="not pinned"):
                policy.release_version(0)
        finally:
            await policy.close()

    asyncio.run(main())
