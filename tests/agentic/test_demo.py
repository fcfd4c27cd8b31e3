"""`longcat demo` end to end in a reduced configuration (a few environments, one SFT step)."""
import pytest

from longcat.cli import main
from longcat.demo import DemoConfig, run


def test_demo_runs_every_stage_then_skips_them(tmp_path, capsys):
    cfg = DemoConfig(envs=6, tasks_per_env=2, eval_fraction=0.3, sft_seconds=1.0, sft_seq_len=2048, sft_grad_accum=1,
                     eval_tasks=1, eval_tiers=(), eval_max_turns=2, eval_max_tokens=16, workers=1,
                     rl_steps=1, eval_copy_values=True)
    report = run(tmp_path / "demo", cfg, progress=False)
    text = report.read_text()
    for part in ("## Data", "## SFT", "## RL", "### Before (random init)", "### After", "| clean | all |",
                 "| noisy | all |", "plots/sft_loss.png", "plots/success.png", "rl/reward.png", "plots/rl.png",
                 "trajectories of tier 2 or lower (", "copied from the conversation (`--copy-values`)",
                 "A copy head trained beside it"):
        assert part in text
    assert (tmp_path / "demo" / "plots" / "success.png").stat().st_size > 1000
    assert (tmp_path / "demo" / "sft" / "final" / "config.json").is_file()
    assert (tmp_path / "demo" / "rl" / "checkpoints" / "step-000001" / "model" / "config.json").is_file()
    # the SFT's copy head, and the RL checkpoint carries it along for --copy-values
    for folder in (tmp_path / "demo" / "sft" / "final", tmp_path / "demo" / "rl" / "checkpoints" / "step-000001" / "model"):
        assert (folder / "copy_head.safetensors").is_file() and (folder / "copy_head.json").is_file()
    capsys.readouterr()
    run(tmp_path / "demo", cfg, progress=False)          # everything exists: every stage skips
    assert capsys.readouterr().out.count("output exists: skipped") == 7


def test_demo_and_sft_refuse_a_bad_max_tier(capsys):
    for argv, message in ((["demo", "--sft-max-tier", "0"], "--sft-max-tier: expected a value in [1, 1000], got 0"),
                          (["demo", "--sft-max-tier", "two"], "--sft-max-tier: expected an integer, got 'two'"),
                          (["sft", "--data", "d", "--model", "m", "--out", "o", "--max-tier", "-1"],
                           "--max-tier: expected a value in [1, 1000], got -1")):
        with pytest.raises(SystemExit):
            main(argv)
        assert message in capsys.readouterr().err


def test_demo_sft_over_two_processes_reports_a_failure(tmp_path):
    """The data-parallel SFT stage runs `longcat sft` under torch.distributed.run; a failing run is
    an error that says how to go on, not a silent empty checkpoint."""
    from longcat.demo import _sft
    from longcat.sft import SFTConfig

    with pytest.raises(RuntimeError, match="exited with status .* resumes from"):
        _sft(tmp_path / "missing.jsonl", tmp_path / "no-model", tmp_path / "sft", SFTConfig(max_steps=1), 2, False)
    assert not (tmp_path / "sft" / "final").exists()
