"""``longcat rl train`` backend options: listed in the help, and ``--ray-address`` without
``--ray`` is a one-line error (exit 2) before anything starts."""
import pytest

from longcat.cli import console_main, main


def test_help_lists_the_backend_options(capsys):
    with pytest.raises(SystemExit):
        main(["rl", "train", "--help"])
    out = capsys.readouterr().out
    assert "--ray" in out and "--ray-address" in out


def test_ray_address_needs_ray(tmp_path, capsys):
    code = console_main(["rl", "train", "--recipe", "rl/arith-tiny.yaml", "--out", str(tmp_path), "--ray-address", "auto"])
    assert code == 2
    assert "--ray-address' needs '--ray'" in capsys.readouterr().err
