"""The README's "Environments" example runs as written."""
import re
from pathlib import Path


def test_readme_environments_example(capsys):
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    m = re.search(r"<!-- envs-example -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README.md lost its envs example"
    exec(compile(m.group(1), "README.md:envs-example", "exec"), {})
    out = capsys.readouterr().out
    assert out.strip()
