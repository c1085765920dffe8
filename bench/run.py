"""The ``leanscore bench`` job: prepare what is missing, measure, write every output."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

from leanscore.bench.compare import (
    BenchConfig,
    compare_variants,
    comparison_table,
    decomposition_table,
    default_keep,
    resolve_path,
    scan_plan,
    wide_console,
)
from leanscore.bench.metrics import environment, source_commit
from leanscore.bench.paths import TorchModel
from leanscore.bench.prepare import prepare_inputs
from leanscore.bench.pricing import cost_model_text, load_pricing
from leanscore.bench.report import (
    append_history,
    is_table_name,
    markdown,
    write_charts,
    write_html,
    write_json,
)
from leanscore.compression.mlflow_registry import is_model_uri, load_artifact
from leanscore.jobs.score import read_input
from leanscore.jobs.tables import print_table
from pyspark.sql import SparkSession


def run_bench(
    spark: SparkSession, config: BenchConfig, out: str | Path, *, config_dir: Path
) -> dict:
    console = wide_console()
    out = Path(out).resolve()
    started = dt.datetime.now(dt.UTC)
    commit = source_commit()  # the code measured: taken before the run, not after it
    pricing = load_pricing(resolve_path(config.pricing, config_dir))  # fail before any work
    artifact_paths = [
        a if is_model_uri(a) else resolve_path(a, config_dir) for a in config.artifacts
    ]
    state_dict = (
        resolve_path(config.torch_model.state_dict, config_dir) if config.torch_model else None
    )
    ref = config.input
    if ref.path:
        ref = ref.model_copy(update={"path": resolve_path(ref.path, config_dir)})
    console.rule(f"[bold]leanscore bench: {config.workload}")
    if config.prepare is not None:
        if not ref.path or ref.format != "delta":
            raise ValueError("prepare writes a Delta table: give input.path with format: delta")
        prepare_inputs(
            spark,
            config.prepare,
            table_path=ref.path,
            artifact_paths=artifact_paths,
            state_dict_path=state_dict,
            console=console,
        )
    artifacts = [load_artifact(p) for p in artifact_paths]
    torch_model = (
        TorchModel.load(config.torch_model.factory, state_dict) if config.torch_model else None
    )
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(config.arrow_batch_rows))
    df = read_input(spark, ref)
    if config.label_column and config.label_column not in df.columns:
        raise ValueError(
            f"label_column {config.label_column!r} is not in the input; it has {df.columns}"
        )
    keep = config.keep_columns or default_keep(df, artifacts[0])
    scan = scan_plan(spark, ref, artifacts[0], keep, console) if config.scan else None
    report = compare_variants(
        spark,
        df,
        artifacts,
        pricing,
        keep=keep,
        scan=scan,
        arrow_batch_rows=config.arrow_batch_rows,
        label_column=config.label_column,
        repeats=config.repeats,
        batch_size=config.batch_size,
        torch_model=torch_model,
        onnx_predict_batch_udf=config.onnx_predict_batch_udf,
        mlflow_spark_udf=config.mlflow_spark_udf,
        bound_rows=config.bound_rows,
        console=console,
        distinct_examples=config.distinct_examples,
        bench_targets=config.targets,
        spark_reader_variant=config.spark_reader_variant,
        torch_batch_sizes=config.torch_batch_sizes,
        torch_sweep_rows=config.torch_sweep_rows,
    )
    report = {
        "workload": config.workload,
        "run_id": uuid.uuid4().hex[:12],
        "run_at": started.isoformat(timespec="seconds"),
        "input": ref.table or ref.path,
        **report,
        "environment": {**environment(spark, cores=report["cores"]), "commit": commit},
        "cost_model": cost_model_text(pricing),
    }
    if config.prepare is not None and config.prepare.workload == "images":
        from leanscore.bench.image_targets import image_section

        report["images"] = image_section(
            report, df, artifacts[0], config.targets, rows=config.bound_rows, console=console
        )
    out.mkdir(parents=True, exist_ok=True)
    report["charts"] = write_charts(report, out)
    history = config.history or str(out / "history")
    if not is_table_name(history):
        history = resolve_path(history, config_dir)
    report["history"] = {"path": history, "format": "delta"}
    report["history"]["version"] = append_history(spark, report, history)
    write_json(report, out)
    text = markdown(report) + (report["images"]["markdown"] if "images" in report else "")
    (out / "report.md").write_text(text)
    write_html(report, out, text)
    print_table(
        console, comparison_table(report, title=f"{config.workload}: {report['rows']:,} rows")
    )
    for model, ratio in (report.get("leanscore_vs_spark_udf") or {}).items():
        console.print(f"{model}: leanscore {ratio:.2f}x mlflow.pyfunc.spark_udf (same model)")
    print_table(
        console, decomposition_table(report, title=f"{config.workload}: what each part buys")
    )
    console.log(
        f"report: {out / 'report.html'}, {out / 'report.json'}, {out / 'report.md'}; history: "
        f"{history}"
    )
    return report
