"""The `longcat` command reports bad input in one line (exit 2), not a traceback."""
import pytest

from longcat.cli import console_main


@pytest.mark.parametrize("argv,named", [
    (["rl", "train", "--recipe", "no-such-recipe.yaml"], "recipe"),
    (["sft", "--data", "no-such.jsonl", "--model", "no-such-model", "--out", "out"], "model"),
])
def test_bad_input_is_one_line(argv, named, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LONGCAT_DEBUG", raising=False)
    assert console_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("longcat: error: ") and named in err and "Traceback" not in err


def test_debug_keeps_the_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LONGCAT_DEBUG", "1")
    with pytest.raises(ValueError, match="recipe"):
        console_main(["rl", "train", "--recipe", "no-such-recipe.yaml"])
