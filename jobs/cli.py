"""The ``leanscore`` command line. Each command parses and validates, then calls one function."""

from __future__ import annotations

import json
import logging
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from leanscore.compression.errors import LeanscoreError, is_leanscore_error
from leanscore.jobs.runtime.logs import configure_logging

app = typer.Typer(
    name="leanscore",
    help="Compress trained models into small ONNX artifacts and score big Parquet/Delta tables "
    "with them in Spark, measured in rows/s and dollars.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("leanscore.jobs.cli")

ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="YAML config file.", show_default=False)
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key: --set batch_size=8192 (repeatable)."),
]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"leanscore {version('leanscore')}")
        raise typer.Exit()


@app.callback()
def _main(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Compress trained models into small ONNX artifacts and score big Parquet/Delta tables
    with them in Spark, measured in rows/s and dollars."""


def _config_path(config: Path) -> Path:
    """The config as given, or the one of that name shipped with leanscore (conf/NAME)."""
    from leanscore.jobs.config import find_config

    return find_config(config)


def _fail(err: BaseException) -> None:
    """One clear line on stderr and exit code 1: the message names the problem and the fix."""
    typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code=1)


@app.command()
def demo(
    workdir: Annotated[
        Path, typer.Option(help="Where artifacts, Delta tables and the report go.")
    ] = Path("demo-output"),
    rows: Annotated[
        int, typer.Option(min=1000, help="Rows in each workload's generated Delta table.")
    ] = 50_000,
    run_date: Annotated[
        str | None, typer.Option(help="Partition to write, YYYY-MM-DD (default today).")
    ] = None,
    workload: Annotated[
        list[str] | None,
        typer.Option(
            help="Run only this workload (repeatable): fashion-cnn, digits-mlp, wide-mlp. "
            "Default: fashion-cnn and digits-mlp, the first named as the headline."
        ),
    ] = None,
) -> None:
    """Train, compress, score and compare once on embedded data (local Spark with Delta)."""
    configure_logging("WARNING")
    from leanscore.bench.demo.job import chosen_workloads, run_demo
    from leanscore.jobs.runtime.spark import get_spark

    with _one_line_errors():
        workloads = chosen_workloads(workload)
        if run_date:
            from leanscore.jobs.score import parse_run_date

            parse_run_date(run_date)
        jvm_log = workdir.resolve() / "logs" / "spark.log"
        typer.echo(f"Spark's own log: {jvm_log}")
        spark = get_spark("leanscore-demo", jvm_log=jvm_log)
        run_demo(spark, workdir, rows=rows, run_date=run_date, workloads=workloads)


@app.command()
def compress(
    config: ConfigOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Artifact directory to write.")],
    overrides: SetOpt = None,
    register: Annotated[
        str | None,
        typer.Option(
            help="Also log the artifact to MLflow and register it as a new version of this "
            "model (the registry from MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI).",
        ),
    ] = None,
    alias: Annotated[
        str | None, typer.Option(help="Point this alias (e.g. champion) at the new version.")
    ] = None,
) -> None:
    """Run a compression recipe on a model and write the artifact (model.onnx + manifest.json).

    Refuses (exit 1, no artifact) when the result loses more accuracy than the recipe allows.
    """
    configure_logging()
    from leanscore.jobs.compress import CompressConfig, register_artifact, run_compress
    from leanscore.jobs.config import load_config

    config = _config_path(config)
    with _one_line_errors():
        cfg = load_config(CompressConfig, config, overrides)
        if alias and not register:
            raise ValueError(f"--alias {alias!r} needs --register NAME (the model to alias)")
        if register:
            from leanscore.compression.mlflow_log import check_registry

            check_registry(register)  # before minutes of work, not after
        artifact = run_compress(cfg, out, config_dir=config.resolve().parent)
        typer.echo(f"wrote {artifact.path} (sha256 {artifact.sha256})")
        if register:
            version = register_artifact(artifact, name=register, alias=alias)
            typer.echo(
                f"registered {version.model_uri} (run {version.run_id}"
                + (f", alias {version.alias}" if version.alias else "")
                + ")"
            )


def _run_nightly(
    config_model, job, app_name: str, config: Path, run_date: str, overrides, *, rows_in_jvm=None
) -> dict:
    """Validate a nightly job's date and config, run it, and return its summary; any failure is
    one line on stderr and exit code 1. ``rows_in_jvm(config)``: whether Spark's JVM will
    convert and write the job's rows (how a session this starts compiles; default yes)."""
    configure_logging()
    from leanscore.jobs.config import load_config
    from leanscore.jobs.runtime.spark import get_spark, mentions_s3a
    from leanscore.jobs.score import parse_run_date

    config = _config_path(config)
    with _one_line_errors():
        day = parse_run_date(run_date)
        cfg = load_config(config_model, config, overrides)
        log.info("resolved config: %s", cfg.model_dump_json())
        in_jvm = rows_in_jvm(cfg) if rows_in_jvm is not None else True
        return job(get_spark(app_name, s3a=mentions_s3a(cfg), rows_in_jvm=in_jvm), cfg, day)


@app.command()
def score(
    config: ConfigOpt,
    run_date: Annotated[str, typer.Option(help="The date partition to (re)write, YYYY-MM-DD.")],
    overrides: SetOpt = None,
) -> None:
    """Nightly job: score a Parquet/Delta table into the run date's partition (idempotent)."""
    from leanscore.jobs.runtime.spark import default_master
    from leanscore.jobs.score import ScoreConfig, run_score, tasks_may_write

    summary = _run_nightly(
        ScoreConfig,
        run_score,
        "leanscore-score",
        config,
        run_date,
        overrides,
        rows_in_jvm=lambda cfg: not tasks_may_write(cfg, master=default_master()),
    )
    typer.echo(
        f"scored {summary['rows_out']:,} rows into {summary['output']} for {summary['run_date']} "
        f"({summary['flagged_rows']} flagged, {summary['rows_per_s']:,.0f} rows/s)"
    )
    _shadow_verdict(summary)


@app.command()
def embed(
    config: ConfigOpt,
    run_date: Annotated[str, typer.Option(help="The date partition to (re)write, YYYY-MM-DD.")],
    overrides: SetOpt = None,
) -> None:
    """Nightly job: embed a text column of a Parquet/Delta table into the run date's partition."""
    from leanscore.jobs.embed import EmbedConfig, score_text_table

    summary = _run_nightly(
        EmbedConfig, score_text_table, "leanscore-embed", config, run_date, overrides
    )
    typer.echo(
        f"embedded {summary['rows_out']:,} rows into {summary['output']} for "
        f"{summary['run_date']} ({summary['flagged_rows']} flagged, "
        f"{summary['sentences_per_s']:,.0f} sentences/s)"
    )
    _shadow_verdict(summary)


def _shadow_verdict(summary: dict) -> None:
    """One line for the run's shadow; a breach under ``on_breach: warn`` (the output was
    written) exits with ``WARN_EXIT_CODE`` (3) so a scheduler can alert on it."""
    shadow = summary.get("shadow")
    if shadow is None:
        return
    if shadow["verdict"] == "breach":
        from leanscore.jobs.shadow import WARN_EXIT_CODE

        typer.secho(f"warning: {shadow['reason']}", err=True, fg=typer.colors.YELLOW)
        raise typer.Exit(code=WARN_EXIT_CODE)
    if shadow["reason"]:
        typer.echo(f"note: {shadow['reason']}")
        return
    shown = ", ".join(f"{m['name']} {m['value']}" for m in shadow["metrics"])
    typer.echo(
        f"shadow: {shadow['rows_shadowed']:,} rows, {shown}: pass "
        f"({shadow['shadow_task_seconds']:g} task-seconds)"
    )


@app.command()
def bench(
    config: ConfigOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Report directory.")] = Path(
        "bench-output"
    ),
    overrides: SetOpt = None,
) -> None:
    """Compare model variants on the same table in one Spark session: rows/s, fidelity, $.

    A config with ``kind: embedding`` (conf/bench-embed.yaml) runs the text-embedding bench:
    MiniLM variants and the PyTorch model in predict_batch_udf, in sentences/s and cosine.
    """
    configure_logging()
    from leanscore.bench.compare import BenchConfig
    from leanscore.bench.embed import is_embedding_config
    from leanscore.jobs.config import apply_overrides, load_config, read_yaml
    from leanscore.jobs.runtime.spark import get_spark

    config = _config_path(config)
    with _one_line_errors():
        if is_embedding_config(apply_overrides(read_yaml(config), list(overrides or []))):
            _embedding_bench(config, out, overrides)
            return
        from leanscore.bench.run import run_bench

        cfg = load_config(BenchConfig, config, overrides)
        run_bench(get_spark("leanscore-bench"), cfg, out, config_dir=config.resolve().parent)


@app.command("bench-nightly")
def bench_nightly(
    config: ConfigOpt = Path("conf/bench-nightly.yaml"),
    out: Annotated[Path, typer.Option("--out", "-o", help="Report directory.")] = Path(
        "bench-output/nightly"
    ),
    overrides: SetOpt = None,
) -> None:
    """The nightly job end to end: `leanscore score` as a process against a PySpark job with
    the PyTorch model in predict_batch_udf, at two table sizes: wall time, rows/s, fixed cost."""
    configure_logging()
    from leanscore.bench.nightly import NightlyBenchConfig, report_lines, run_nightly_bench

    _report_bench(
        NightlyBenchConfig, run_nightly_bench, report_lines, config, out, overrides, "nightly"
    )


@app.command("bench-layouts")
def bench_layouts(
    config: ConfigOpt = Path("conf/bench-layouts.yaml"),
    out: Annotated[Path, typer.Option("--out", "-o", help="Report directory.")] = Path(
        "bench-output/layouts"
    ),
    overrides: SetOpt = None,
) -> None:
    """What the feature layout costs: the same rows as array<float>, array<double>, an ML
    vector, float columns and float32 bytes, each read alone and scored by leanscore."""
    configure_logging()
    from leanscore.bench.layouts import LayoutsConfig, report_lines, run_layouts_bench

    _report_bench(LayoutsConfig, run_layouts_bench, report_lines, config, out, overrides, "layouts")


def _report_bench(model, run, report_lines, config: Path, out: Path, overrides, name: str) -> None:
    """Load ``model`` from ``config``, ``run(cfg, out, config_dir=...)``, print the report's
    ``report_lines`` and where ``{name}.json`` and ``{name}.md`` are; a bad config or a failed
    run exits 1 with its message."""
    from leanscore.jobs.config import load_config

    config = _config_path(config)
    try:
        cfg = load_config(model, config, overrides)
        report = run(cfg, out, config_dir=config.resolve().parent)
    except (ValueError, FileNotFoundError, RuntimeError, TypeError) as err:
        _fail(err)
    typer.echo("\n".join(report_lines(report)))
    typer.echo(f"report: {Path(out).resolve() / f'{name}.json'}, {name}.md")


report_app = typer.Typer(help="Generated documents from bench reports.", no_args_is_help=True)
app.add_typer(report_app, name="report")


@report_app.command("docs")
def report_docs(
    report: Annotated[
        list[Path] | None,
        typer.Option(
            "--report",
            help="A bench report JSON to copy into --reports-dir first (repeatable): "
            "report.json of leanscore bench, nightly.json of bench-nightly.",
        ),
    ] = None,
    headline: Annotated[
        Path | None,
        typer.Option(
            help="The comparison report (the demo's or a bench's report.json) README's "
            "headline table is made from; default the one already in --reports-dir."
        ),
    ] = None,
    reports_dir: Annotated[Path, typer.Option(help="Where the docs' reports live.")] = Path(
        "docs/reports"
    ),
    out: Annotated[Path, typer.Option(help="The page to write.")] = Path("docs/benchmarks.md"),
    readme: Annotated[
        Path | None, typer.Option(help="README whose headline markers get the table.")
    ] = Path("README.md"),
) -> None:
    """Write docs/benchmarks.md and README's headline table from bench report JSON files."""
    from leanscore.bench.docs import DocsError, collect, write_docs

    try:
        collect(list(report or []), reports_dir, headline=headline)
        write_docs(reports_dir, out, readme=readme, root=Path.cwd())
    except DocsError as err:
        _fail(err)
    typer.echo(f"wrote {out}" + (f" and the headline of {readme}" if readme else ""))


@report_app.command("reprice")
def report_reprice(
    report: Annotated[Path, typer.Argument(help="A bench or demo report JSON.")],
    pricing: Annotated[Path, typer.Option(help="The pricing file to price its runs under.")],
    out: Annotated[
        Path | None, typer.Option(help="Where to write the re-priced report; default: in place.")
    ] = None,
) -> None:
    """Price a bench or demo report's measured runs under another pricing file: each variant's
    cost, savings and the bill's verdict are recomputed, nothing measured changes."""
    from leanscore.bench.docs import DocsError, load_report
    from leanscore.bench.pricing import load_pricing
    from leanscore.bench.reprice import reprice
    from leanscore.jobs.config import ConfigError

    try:
        priced = reprice(load_report(report), load_pricing(pricing), pricing_source=str(pricing))
    except (DocsError, ConfigError, ValueError, KeyError) as err:
        _fail(err if not isinstance(err, KeyError) else ValueError(f"{report}: no {err} in it"))
    target = out or report
    target.write_text(json.dumps(priced, indent=2) + "\n")
    typer.echo(f"wrote {target}, priced under {pricing}")


def _embedding_bench(config: Path, out: Path, overrides: list[str] | None) -> None:
    from leanscore.bench.embed import BenchEmbedConfig, run_embed_bench, table_lines
    from leanscore.jobs.config import load_config
    from leanscore.jobs.runtime.spark import get_spark

    cfg = load_config(BenchEmbedConfig, config, overrides)
    report = run_embed_bench(
        get_spark("leanscore-embed-bench"), cfg, out, config_dir=config.resolve().parent
    )
    typer.echo("\n".join(table_lines(report)))
    for record in report["rejected"]:
        typer.echo(f"rejected: {record['message']}")
    targets = report["targets"]
    if targets["variant"]:
        state = "met" if targets["met"] else "NOT met"
        typer.echo(f"targets for {targets['variant']}: {state}")
    typer.echo(f"report: {Path(out).resolve() / 'report.json'}, report.md")


_RAISED = re.compile(r"^\s*((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Fail)\w*): (.*)$")


def _spark_error(err: Exception) -> str:
    """The useful line of an error raised inside Spark: the message of a ``LeanscoreError``
    the worker raised (Spark passes it on as traceback text naming its class), else the last
    exception line of that text, else Spark's own first line."""
    text = str(err)
    raised = [m for m in map(_RAISED.match, text.splitlines()) if m]
    for match in raised:
        if is_leanscore_error(match.group(1)):
            return match.group(2)
    for match in raised:
        if match.group(1) in ("ValueError", "TypeError"):
            return match.group(2)
    if raised:
        return raised[-1].group(0).strip()
    return text.splitlines()[0] if text else type(err).__name__


@contextmanager
def _one_line_errors():
    """Every command's failures as one line on stderr and exit code 1: a ``LeanscoreError``
    (or a built-in ValueError/TypeError/OSError from validating input) by its message, anything
    Spark raised by the line of it that says what went wrong."""
    try:
        yield
    except typer.Exit:
        raise
    except (LeanscoreError, ValueError, TypeError, OSError, RuntimeError) as err:
        if type(err).__module__.startswith(("pyspark", "py4j")):
            _fail(_spark_error(err))
        _fail(err)
    except Exception as err:  # Spark wraps executor errors; surface their useful line
        _fail(_spark_error(err))


def main() -> None:  # pragma: no cover - console script entry
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    app()
