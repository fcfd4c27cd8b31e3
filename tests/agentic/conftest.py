import pytest


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """A small environment build (2 domains) and its synthesised data, shared by the tests here."""
    from longcat.data import envs_adapter as ea
    from longcat.data.synth import synthesize

    root = tmp_path_factory.mktemp("agentic")
    ea.build_envs(root / "envs", count=12, seed=0, domains=["retail", "airline"], tasks_per_env=2, workers=1,
                  progress=False)
    summary = synthesize(root / "envs", root / "data", eval_fraction=0.25, seed=0, workers=1, progress=False)
    return root, summary


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    from longcat.models.random_init import init_checkpoint

    return init_checkpoint(tmp_path_factory.mktemp("tiny") / "init", "tiny", seed=0, max_position_embeddings=4096)


@pytest.fixture(scope="session")
def lead_to():
    """``lead_to(tokens)``: a logits processor that walks a (random) model through ``tokens``
    first, e.g. to the opening of a call's string value, and leaves it free after them."""
    import torch

    def make(forced):
        def lead(generated, logits):
            k = len(generated) - 1
            if 0 <= k < len(forced):
                logits = torch.full_like(logits, float("-inf"))
                logits[forced[k]] = 0.0
            return logits
        return lead
    return make
