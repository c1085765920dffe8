"""The Databricks bundle and the scheduler examples name only things that exist.

No workspace or scheduler is reachable here, so each command line they hold is parsed by the
real ``leanscore`` CLI (click's own parser: unknown options and bad values fail), every config
file they name is loaded and validated with the same overrides, and every notebook and widget
they name is checked against the notebook's source.
"""

from __future__ import annotations

import ast
import re
import shlex
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import click
import pytest
import typer
import yaml
from leanscore.bench.compare import BenchConfig
from leanscore.jobs.cli import app
from leanscore.jobs.config import load_config
from leanscore.jobs.score import ScoreConfig
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "databricks.yml"
SCHEDULERS = ROOT / "conf" / "schedulers"
CONFIG_MODELS = {"score": ScoreConfig, "bench": BenchConfig}
WORKSPACE_FILES = "${workspace.file_path}/"
SAMPLE_DATE = "2026-11-28"


@pytest.fixture(scope="module")
def bundle() -> dict:
    return yaml.safe_load(BUNDLE.read_text())


def jobs(bundle: dict) -> dict:
    return bundle["resources"]["jobs"]


def tasks(bundle: dict):
    for job_name, job in jobs(bundle).items():
        for task in job["tasks"]:
            yield job_name, job, task


def substitute(text: str, bundle: dict, job: dict) -> str:
    """Resolve ``${var.x}``, ``{{job.parameters.x}}`` and ``{{job.start_time.iso_date}}`` as
    Databricks would for a run on SAMPLE_DATE."""
    variables = {k: str(v["default"]) for k, v in bundle.get("variables", {}).items()}
    params = {p["name"]: p["default"] for p in job.get("parameters", [])}

    def var(m: re.Match) -> str:
        assert m.group(1) in variables, f"${{var.{m.group(1)}}} is not declared in variables"
        return variables[m.group(1)]

    def job_param(m: re.Match) -> str:
        assert m.group(1) in params, f"{{{{job.parameters.{m.group(1)}}}}} is not a job parameter"
        return params[m.group(1)]

    for _ in range(3):  # parameter defaults may themselves hold references
        text = re.sub(r"\$\{var\.(\w+)\}", var, text)
        text = re.sub(r"\{\{\s*job\.parameters\.(\w+)\s*\}\}", job_param, text)
        text = text.replace("{{job.start_time.iso_date}}", SAMPLE_DATE)
    assert "{{" not in text and "${var." not in text, f"unresolved reference in {text!r}"
    return text


def repo_file(path: str) -> Path:
    return ROOT / path.removeprefix(WORKSPACE_FILES)


def check_cli_call(args: list[str]) -> dict:
    """Parse ``args`` exactly as ``leanscore`` would, validate the config it names with its
    ``--set`` overrides, and return the parsed parameters."""
    group = typer.main.get_command(app)
    sub = args[0]
    assert sub in group.commands, f"{sub!r} is not a leanscore command: {sorted(group.commands)}"
    help_text = CliRunner().invoke(app, [sub, "--help"], terminal_width=200)
    assert help_text.exit_code == 0, help_text.output
    for token in args[1:]:
        if token.startswith("--"):
            assert token.split("=")[0] in help_text.output, f"{token} not in `leanscore {sub}`"
    try:
        ctx = group.commands[sub].make_context(sub, list(args[1:]))
    except click.ClickException as err:
        pytest.fail(f"leanscore {shlex.join(args)}: {err.format_message()}")
    params = ctx.params
    if params.get("run_date"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\d|\$\(date.*\)", params["run_date"])
    config = params.get("config")
    if config is not None:
        path = repo_file(str(config))
        assert path.is_file(), f"config {config} does not exist in the repository"
        if sub in CONFIG_MODELS:
            load_config(CONFIG_MODELS[sub], path, params.get("overrides") or [])
    return params


def notebook_widgets(path: Path) -> set[str]:
    """The widget names a notebook declares (the dict literal passed to ``widgets``)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "widgets"
            and isinstance(node.args[1], ast.Dict)
        ):
            return {k.value for k in node.args[1].keys}
    raise AssertionError(f"{path} declares no widgets")


def test_bundle_structure(bundle):
    assert bundle["bundle"]["name"] == "leanscore"
    assert {"dev", "prod"} <= set(bundle["targets"])
    nightly = jobs(bundle)["leanscore_nightly"]
    weekly = jobs(bundle)["leanscore_weekly_bench"]
    assert nightly["schedule"]["pause_status"] == "UNPAUSED"
    # Quartz: seconds minutes hours day-of-month month day-of-week; daily and weekly.
    daily = nightly["schedule"]["quartz_cron_expression"].split()
    assert len(daily) == 6 and daily[3] == "*" and daily[5] == "?", daily
    weekly_cron = weekly["schedule"]["quartz_cron_expression"].split()
    assert len(weekly_cron) == 6 and weekly_cron[3] == "?" and weekly_cron[5] in {"SUN", "1"}
    assert {p["name"] for p in nightly["parameters"]} >= {"run_date", "input_table", "artifact"}
    for job in jobs(bundle).values():
        for cluster in job["job_clusters"]:
            tags = cluster["new_cluster"]["custom_tags"]
            assert {"project", "job", "cost_center"} <= set(tags), tags
        for task in job["tasks"]:
            cluster_keys = {c["job_cluster_key"] for c in job["job_clusters"]}
            assert task["job_cluster_key"] in cluster_keys
            for dep in task.get("depends_on", []):
                assert dep["task_key"] in {t["task_key"] for t in job["tasks"]}


def test_wheel_task_entry_point_exists(bundle):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wheel_tasks = [t["python_wheel_task"] for _, _, t in tasks(bundle) if "python_wheel_task" in t]
    assert len(wheel_tasks) >= 2
    for task in wheel_tasks:
        assert task["package_name"] == project["name"]
        assert task["entry_point"] in project["scripts"]
        (ep,) = entry_points(group="console_scripts", name=task["entry_point"])
        assert ep.load() is app
    # The library the tasks install is what the bundle's artifact build writes.
    build = bundle["artifacts"]["leanscore_wheel"]["build"]
    out_dir = shlex.split(build)[shlex.split(build).index("-w") + 1]
    for _, _, task in tasks(bundle):
        for lib in task.get("libraries", []):
            assert lib["whl"].startswith(f"./{out_dir}/"), lib


def test_wheel_task_parameters_parse_and_configs_validate(bundle):
    parsed = {}
    for job_name, job, task in tasks(bundle):
        if "python_wheel_task" in task:
            args = [substitute(a, bundle, job) for a in task["python_wheel_task"]["parameters"]]
            parsed[job_name] = check_cli_call(args)
    nightly = parsed["leanscore_nightly"]
    assert nightly["run_date"] == SAMPLE_DATE
    config = load_config(ScoreConfig, repo_file(str(nightly["config"])), nightly["overrides"])
    variables = bundle["variables"]
    assert config.input.table == variables["input_table"]["default"]
    assert config.output.table == variables["output_table"]["default"]
    assert config.artifact == variables["artifact_path"]["default"]
    bench = load_config(
        BenchConfig,
        repo_file(str(parsed["leanscore_weekly_bench"]["config"])),
        parsed["leanscore_weekly_bench"]["overrides"],
    )
    assert bench.artifacts[-1] == variables["artifact_path"]["default"]


def test_notebook_tasks_name_real_notebooks_and_widgets(bundle):
    seen = 0
    for _, job, task in tasks(bundle):
        if "notebook_task" not in task:
            continue
        seen += 1
        path = ROOT / task["notebook_task"]["notebook_path"]
        assert path.is_file(), path
        assert path.read_text().startswith("# Databricks notebook source\n")
        params = task["notebook_task"].get("base_parameters", {})
        unknown = set(params) - notebook_widgets(path)
        assert not unknown, f"{path.name} has no widgets {unknown}"
        for value in params.values():
            value = substitute(str(value), bundle, job)
            if value.startswith(WORKSPACE_FILES):
                assert repo_file(value).is_file(), value
    assert seen >= 2


def test_cluster_matches_pricing_file(bundle):
    """The cost report prices the cluster the nightly job really runs on."""
    pricing = yaml.safe_load((ROOT / "conf" / "pricing.yaml").read_text())
    variables = bundle["variables"]
    assert variables["node_type_id"]["default"] == pricing["instance"]["name"]
    assert int(variables["num_workers"]["default"]) == pricing["workers"]


def bash_commands_in_dag(path: Path) -> list[str]:
    """The ``bash_command`` strings of the DAG's BashOperators (f-strings flattened)."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "BashOperator":
            for kw in node.keywords:
                if kw.arg == "bash_command":
                    found.append(_flatten(kw.value))
    return found


def _flatten(node: ast.AST) -> str:
    if isinstance(node, ast.Constant):
        return str(node.value)
    if isinstance(node, ast.JoinedStr):
        return "".join(_flatten(v) for v in node.values)
    if isinstance(node, ast.FormattedValue):
        return "/opt/leanscore"  # {HOME}
    raise AssertionError(f"unexpected expression in a bash_command: {ast.dump(node)}")


def leanscore_args(command: str) -> list[str]:
    """The arguments after ``leanscore`` in a shell command line."""
    words = shlex.split(command)
    start = next(i for i, w in enumerate(words) if w.endswith("bin/leanscore"))
    end = next((i for i, w in enumerate(words) if i > start and w in {">>", ">", "&&"}), None)
    return words[start + 1 : end]


def test_airflow_dag_runs_real_commands():
    path = SCHEDULERS / "airflow_nightly_dag.py"
    compile(path.read_text(), str(path), "exec")
    commands = bash_commands_in_dag(path)
    assert len(commands) == 2
    assert all("{{ ds }}" in c for c in commands)
    # Airflow renders the Jinja template before bash sees the line.
    rendered = [c.replace("{{ ds }}", SAMPLE_DATE) for c in commands]
    score = check_cli_call(leanscore_args(rendered[0]))
    assert score["run_date"] == SAMPLE_DATE
    bench = check_cli_call(leanscore_args(rendered[1]))
    assert str(bench["out"]).startswith("bench-output")
    text = path.read_text()
    assert "conf/schedulers/spark_submit_main.py" in text
    assert (SCHEDULERS / "spark_submit_main.py").is_file()


def test_cron_line_runs_a_real_command():
    lines = [
        line
        for line in (SCHEDULERS / "leanscore.cron").read_text().splitlines()
        if line.strip() and not line.startswith("#") and "=" not in line.split()[0]
    ]
    assert len(lines) == 1
    fields = lines[0].split(maxsplit=5)
    assert all(re.fullmatch(r"[\d*/,\-]+", f) for f in fields[:5]), fields
    command = fields[5].replace("\\%", "%")
    args = leanscore_args(command)
    params = check_cli_call(args)
    assert params["run_date"].startswith("$(date")
