"""Every CLI command answers --help, and bad input exits non-zero with a message."""

from __future__ import annotations

import pytest
from leanscore.jobs.cli import app
from typer.testing import CliRunner

runner = CliRunner()


@pytest.mark.parametrize(
    ("command", "phrase"),
    [
        ("demo", "Train, compress, score and compare"),
        ("compress", "compression recipe"),
        ("score", "Nightly job"),
        ("embed", "embed a text column"),
        ("bench", "Compare model variants"),
    ],
)
def test_each_command_has_help(command, phrase):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert phrase in " ".join(result.output.split())


def test_top_level_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "compress", "score", "embed", "bench"):
        assert command in result.output


def test_score_with_malformed_run_date_exits_1(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("artifact: x\ninput: {path: x}\noutput: {path: y}\n")
    result = runner.invoke(app, ["score", "--config", str(config), "--run-date", "2026-13-01"])
    assert result.exit_code == 1
    assert "run date '2026-13-01' is not a date in YYYY-MM-DD form" in result.output


@pytest.mark.parametrize(("command", "key"), [("score", "batchsize"), ("embed", "sub_batch")])
def test_nightly_job_with_unknown_config_key_exits_1(tmp_path, command, key):
    config = tmp_path / "c.yaml"
    config.write_text(f"artifact: x\ninput: {{path: x}}\noutput: {{path: y}}\n{key}: 5\n")
    result = runner.invoke(app, [command, "--config", str(config), "--run-date", "2026-01-01"])
    assert result.exit_code == 1
    assert f"{key}: Extra inputs are not permitted" in result.output


def test_log_level_reaches_leanscore_modules(monkeypatch):
    """Modules log as ``leanscore.<package>.<module>``: the level set from LEANSCORE_LOG_LEVEL
    reaches them; by default they stay at WARNING (a failing command prints one line)."""
    import logging

    from leanscore.jobs.runtime.logs import configure_logging

    root = logging.getLogger("leanscore")
    before = root.level
    module = logging.getLogger("leanscore.jobs.score")
    try:
        monkeypatch.delenv("LEANSCORE_LOG_LEVEL", raising=False)
        configure_logging()
        assert not module.isEnabledFor(logging.INFO)
        assert module.isEnabledFor(logging.WARNING)
        monkeypatch.setenv("LEANSCORE_LOG_LEVEL", "info")
        configure_logging()
        assert module.isEnabledFor(logging.INFO)
    finally:
        root.setLevel(before)
