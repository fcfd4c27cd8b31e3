"""Fixtures shared by the Ray tests: a 2-CPU local Ray cluster per test module (torch on one
thread meanwhile: the actors share the cores), and a small environment build with a random tiny
policy checkpoint (the longcat tokenizer) for the multi-turn task."""
import pytest
import torch


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def envs_world(tmp_path_factory):
    from longcat.data import envs_adapter as ea
    from longcat.models.random_init import init_checkpoint

    root = tmp_path_factory.mktemp("envs-world")
    # One process: with more the build forks worker processes, and a fork of a process whose Ray
    # (the ray_cluster fixture, often set up first) runs threads can deadlock in the child.
    ea.build_envs(root / "envs", count=4, seed=0, tasks_per_env=2, workers=1, progress=False)
    init_checkpoint(root / "init", "tiny", seed=0)
    return root


@pytest.fixture(scope="module")
def arith_server(tmp_path_factory):
    """``longcat serve``'s app in a thread, serving a random tiny arithmetic checkpoint as
    ``arith-policy`` (other weights than a trainer's seed 0: the first push must replace them)."""
    from longcat.engine import AsyncEngine
    from longcat.models import LongcatFlashConfig, LongcatFlashForCausalLM
    from longcat.rl.tasks import arith_tokenizer
    from longcat.serve import ServerThread, build_app

    folder = tmp_path_factory.mktemp("served")
    torch.manual_seed(123)
    LongcatFlashForCausalLM(LongcatFlashConfig.from_preset("tiny"), dtype=torch.float32).save_pretrained(folder)
    arith_tokenizer().save_pretrained(folder)
    engine = AsyncEngine.from_pretrained(str(folder), max_model_len=64, max_num_seqs=64)
    with ServerThread(build_app(engine, "arith-policy")) as s:
        yield s
