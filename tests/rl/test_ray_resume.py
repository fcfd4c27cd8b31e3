"""Lossless resume of a ``--ray`` run: the driver and its local Ray cluster (generator, reward
and trainer actors) are SIGKILLed at a random moment after the first checkpoint; the resumed
run (a fresh cluster) ends with every prompt id in exactly one place and none trained twice
(the same checks as the in-process backend's resume test)."""
import pytest

from test_resume import kill_and_resume

pytest.importorskip("ray")


# Two Ray clusters start here (about 35 s each on a loaded 2-core machine): slow, still run by
# a plain `pytest tests/rl` (nothing deselects the marker).
@pytest.mark.slow
def test_kill_and_resume_a_ray_run_loses_no_prompt(tmp_path):
    kill_and_resume(tmp_path, "none", "ray", steps=3)
