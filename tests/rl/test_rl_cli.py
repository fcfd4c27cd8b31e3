import pytest

from longcat.cli import main


def test_rl_train_reports_a_bad_recipe(tmp_path):
    with pytest.raises(ValueError, match="is not a file"):
        main(["rl", "train", "--recipe", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  stepz: 3\n")
    with pytest.raises(ValueError, match=r"unknown key 'train\.stepz'"):
        main(["rl", "train", "--recipe", str(bad), "--out", str(tmp_path / "o")])


def test_rl_train_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["rl", "train", "--help"])
    out = capsys.readouterr().out
    assert "--recipe" in out and "--max-steps" in out and "--out" in out
