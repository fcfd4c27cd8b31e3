"""Every ```python block in README.md is a complete program that runs as written (each in a fresh
interpreter, from an empty folder), so a newcomer can copy any of them."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), re.S | re.M)


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, tmp_path):
    code = BLOCKS[index]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    script = tmp_path / f"readme_block_{index}.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    first = code.strip().splitlines()[0]
    assert proc.returncode == 0, f"README block {index} ({first!r}) failed:\n{proc.stderr[-3000:]}"
