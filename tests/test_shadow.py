"""Shadow fidelity through the CLI, with real Spark, Delta, ONNX Runtime and MLflow: a
deterministic sample of each night's rows scored again by the reference model in the same
pass, its verdict deciding whether the night's partition stands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from conftest import held_out_frame, make_artifact
from pyspark.sql import functions as F
from reliability_support import run_cli, write_yaml

ROOT = Path(__file__).resolve().parents[1]
DAY = "2026-03-02"
STATIC_INT8 = [
    {"step": "export"},
    {
        "step": "quantize",
        "mode": "static_int8",
        "per_channel": True,
        "calibration": "minmax",
        "exclude_op_types": ["Softmax"],
    },
]


@pytest.fixture(scope="module")
def int8_artifact(small_model, tmp_path_factory):
    """The small digits MLP, static int8 (calibrated on the training rows): it saturates on
    features beyond the calibrated range, as a compressed model meeting drifted data does."""
    return make_artifact(
        small_model,
        tmp_path_factory.mktemp("shadow") / "int8",
        name="digits-small-int8",
        recipe_steps=STATIC_INT8,
    )


def _config(tmp_path, artifact, src, **shadow):
    return {
        "artifact": str(artifact.path),
        "input": {"path": src},
        "output": {"path": str(tmp_path / "out")},
        "key_columns": ["row_id"],
        "passthrough_columns": ["label"],
        "summary_path": str(tmp_path / "summary.json"),
        "shadow": {"history": str(tmp_path / "history"), **shadow},
    }


def _summary(tmp_path) -> dict:
    return json.loads((tmp_path / "summary.json").read_text())


def _score(tmp_path, config: dict, day: str = DAY, *sets: str):
    path = write_yaml(tmp_path / "nightly.yaml", config)
    args = ["score", "--config", path, "--run-date", day]
    for item in sets:
        args += ["--set", item]
    return run_cli(*args)


def _shifted(spark, digits, n):
    """The same rows with their features tripled: the brighter pixels end past the calibrated
    range [0, 16], where the static int8 model saturates and the fp32 reference does not."""
    return held_out_frame(spark, digits, n=n).withColumn(
        "features", F.transform("features", lambda x: (x * 3.0).cast("float"))
    )


def test_manifest_links_the_reference_that_compress_wrote(int8_artifact, small_model):
    reference = int8_artifact.path / int8_artifact.manifest.reference
    from leanscore.compression.artifact import Artifact

    loaded = Artifact.load(reference)
    assert loaded.manifest.name == "digits-small-int8-reference"
    assert loaded.sha256 != int8_artifact.sha256
    assert loaded.manifest.batch_dependent is False and loaded.manifest.task == "classification"
    assert loaded.manifest.features == int8_artifact.manifest.features


def test_clean_passes_shifted_fails_or_warns_and_the_history_keeps_every_run(
    spark, digits, int8_artifact, tmp_path
):
    src = str(tmp_path / "in")
    held_out_frame(spark, digits, n=400).write.format("delta").save(src)
    config = _config(tmp_path, int8_artifact, src, fraction=0.5, min_agreement=0.99)

    clean = _score(tmp_path, config)
    assert clean.exit_code == 0, clean.output
    assert "shadow:" in clean.output and ": pass" in clean.output
    shadow = _summary(tmp_path)["shadow"]
    assert shadow["verdict"] == "pass" and 150 < shadow["rows_shadowed"] < 250
    agreement = {m["name"]: m for m in shadow["metrics"]}["agreement"]
    assert agreement["value"] >= 0.99 and agreement["ci_low"] <= agreement["value"]
    assert agreement["ci_high"] <= 1.0 and agreement["limit"] == 0.99
    assert sum(c["rows"] for c in shadow["per_class"]) == shadow["rows_shadowed"]
    # a few held-out digits light a pixel the training digits never did; the guard counts them
    assert len(shadow["out_of_range"]) == 64 and max(shadow["out_of_range"].values()) < 10
    assert shadow["shadow_task_seconds"] > 0
    assert "shadow_record" in _summary(tmp_path)["phase_seconds"]
    out = spark.read.format("delta").load(str(tmp_path / "out"))
    assert not [c for c in out.columns if c.startswith("__shadow")]
    assert not (tmp_path / "out" / "_leanscore_staging").exists()  # published, then removed
    clean_rows = out.select("row_id", "prediction").orderBy("row_id").toPandas()

    # the same table drifted past the calibrated range: the compressed model disagrees
    _shifted(spark, digits, 400).write.format("delta").mode("overwrite").save(src)
    failed = _score(tmp_path, config)
    assert failed.exit_code == 1, failed.output
    (line,) = failed.stderr.strip().splitlines()
    assert "shadow agreement" in line and "below min_agreement=0.99" in line
    assert line.endswith("the output was not touched")
    failure = _summary(tmp_path)
    assert failure["status"] == "failed" and failure["shadow"]["verdict"] == "breach"
    assert sum(failure["shadow"]["out_of_range"].values()) > 1000  # the drift the guard saw
    out_log = tmp_path / "out" / "_delta_log"
    assert sorted(p.name for p in out_log.glob("*.json"))[-1] == "00000000000000000000.json"
    assert not (tmp_path / "out" / "_leanscore_staging").exists()
    kept = spark.read.format("delta").load(str(tmp_path / "out"))
    pd.testing.assert_frame_equal(
        kept.select("row_id", "prediction").orderBy("row_id").toPandas(), clean_rows
    )

    warned = _score(tmp_path, config, DAY, "shadow.on_breach=warn")
    assert warned.exit_code == 3, warned.output
    assert warned.stderr.strip().startswith("warning: shadow agreement")
    assert _summary(tmp_path)["status"] == "succeeded"
    written = spark.read.format("delta").load(str(tmp_path / "out"))
    shifted_rows = written.select("row_id", "prediction").orderBy("row_id").toPandas()
    assert not shifted_rows.equals(clean_rows)  # the warn run's output stands

    history = spark.read.format("delta").load(str(tmp_path / "history")).orderBy("recorded_at")
    rows = history.collect()
    assert [r["verdict"] for r in rows] == ["pass", "breach", "breach"]
    assert [r["on_breach"] for r in rows] == ["fail", "fail", "warn"]
    assert [r["output_version"] for r in rows] == [0, None, 1]
    assert {r["model_sha256"] for r in rows} == {int8_artifact.sha256}
    assert rows[0]["reference_name"] == "digits-small-int8-reference"
    assert rows[0]["rows_scored"] == 400 and len(rows[0]["per_class"]) == 10
    by_metric = {m["name"]: m for m in rows[2]["metrics"]}
    assert by_metric["agreement"]["breached"] and by_metric["agreement"]["value"] < 0.99
    _dashboard_and_chart_read(spark, tmp_path)


def _dashboard_and_chart_read(spark, tmp_path):
    """The bundle's dashboard query and the cost report's chart, on the history just written."""
    import yaml
    from leanscore.jobs.shadow import read_history
    from leanscore.jobs.shadow_report import (
        DASHBOARD_TABLE,
        SERIES_QUERY,
        metrics_by_run,
        plot_metrics,
    )

    bundle = yaml.safe_load((ROOT / "databricks.yml").read_text())
    assert bundle["variables"]["shadow_history_table"]["default"] == DASHBOARD_TABLE
    spec = json.loads((ROOT / "notebooks" / "bench_history.lvdash.json").read_text())
    (dataset,) = [d for d in spec["datasets"] if d["name"] == "shadow"]
    query = "".join(dataset["queryLines"])
    assert query.strip() == SERIES_QUERY.format(table=DASHBOARD_TABLE)
    read_history(spark, str(tmp_path / "history")).createOrReplaceTempView("shadow_view")
    series = spark.sql(query.replace(DASHBOARD_TABLE, "shadow_view")).toPandas()
    assert set(series["series"]) == {
        "digits-small-int8 agreement",
        "digits-small-int8 agreement threshold",
        "digits-small-int8 probability_diff",
        "digits-small-int8 probability_diff threshold",
    }
    assert len(series) == 3 * 2 * 2  # three runs, two metrics, each with its threshold
    (widget,) = [
        i["widget"] for p in spec["pages"] if p["name"] == "shadow_fidelity" for i in p["layout"]
    ]
    used = {
        f["expression"].strip("`AVG()") for q in widget["queries"] for f in q["query"]["fields"]
    }
    assert used <= set(series.columns)
    rows = metrics_by_run(read_history(spark, str(tmp_path / "history")))
    assert list(rows["verdict"]) == ["pass", "pass", "breach", "breach", "breach", "breach"]
    assert plot_metrics(rows, tmp_path / "shadow.png").stat().st_size > 1000


@pytest.mark.parametrize("output", ["parquet", "table"])
def test_a_breach_under_fail_leaves_parquet_and_catalog_outputs_untouched(
    spark, digits, int8_artifact, tmp_path, output
):
    """The night's rows wait in staging until the sample is judged: a Parquet partition, which
    keeps no earlier version to restore, and a catalog table keep the previous night's rows, and
    no staging is left behind after a pass or a breach."""
    src = str(tmp_path / "in")
    held_out_frame(spark, digits, n=200).write.format("delta").save(src)
    config = _config(tmp_path, int8_artifact, src, fraction=0.5, min_agreement=0.99)
    table = f"shadow_out_{output}"
    if output == "table":
        config["output"] = {"table": table}
        staging = f"{table}_leanscore_staging_{DAY.replace('-', '')}"
    else:
        config["output"] = {"path": str(tmp_path / "out"), "format": "parquet"}

    def rows():
        frame = (
            spark.read.table(table)
            if output == "table"
            else spark.read.parquet(str(tmp_path / "out"))
        )
        return frame.select("row_id", "prediction", "scored_at").orderBy("row_id").toPandas()

    def no_staging_left():
        if output == "table":
            return not spark.catalog.tableExists(staging)
        return not (tmp_path / "out" / "_leanscore_staging").exists()

    assert _score(tmp_path, config).exit_code == 0
    clean = rows()
    assert len(clean) == 200 and no_staging_left()
    _shifted(spark, digits, 200).write.format("delta").mode("overwrite").save(src)
    failed = _score(tmp_path, config)
    assert failed.exit_code == 1 and "the output was not touched" in failed.stderr
    pd.testing.assert_frame_equal(rows(), clean)
    assert no_staging_left()


def test_a_rerun_of_a_date_shadows_the_same_rows(spark, digits, int8_artifact, tmp_path):
    """The sample is the keys' hash mixed with the date: a rerun compares the very same rows,
    another date others; the tasks' per-batch choice equals the mask over the whole table."""
    from leanscore.udfs.shadow import date_seed, sample_mask

    src = str(tmp_path / "in")
    held_out_frame(spark, digits, n=300).write.format("delta").save(src)
    config = _config(tmp_path, int8_artifact, src, fraction=0.2)
    config["arrow_batch_rows"] = 64  # many batches per task

    records = []
    for _ in range(2):
        result = _score(tmp_path, config, DAY)
        assert result.exit_code == 0, result.output
        records.append(_summary(tmp_path)["shadow"])
    first, rerun = records
    keys = pa.table({"row_id": pa.array(np.arange(300), pa.int64())})
    chosen = {d: sample_mask(keys, 0.2, date_seed(d)) for d in (DAY, "2026-03-03")}
    assert first["rows_shadowed"] == rerun["rows_shadowed"] == int(chosen[DAY].sum())
    assert first["per_class"] == rerun["per_class"] and first["metrics"] == rerun["metrics"]
    # the classes of the shadowed rows are those of the rows the whole-table mask picks (up to
    # the rows where the two models disagree)
    out = spark.read.format("delta").load(str(tmp_path / "out")).orderBy("row_id")
    predicted = np.array([r["prediction"] for r in out.select("prediction").collect()])
    expected = np.bincount(predicted[chosen[DAY]], minlength=10)
    per_class = np.array([c["rows"] for c in first["per_class"]])
    agreement = {m["name"]: m for m in first["metrics"]}["agreement"]["value"]
    disagreeing = round((1 - agreement) * first["rows_shadowed"])
    assert np.abs(per_class - expected).sum() <= 2 * disagreeing
    # another date shadows other rows
    assert (chosen[DAY] != chosen["2026-03-03"]).any()


def test_a_registered_reference_by_alias(spark, digits, int8_artifact, registry, tmp_path):
    from leanscore.compression.artifact import Artifact
    from leanscore.jobs.compress import register_artifact

    reference = Artifact.load(int8_artifact.path / "reference")
    register_artifact(reference, name="shadow-digits-reference", alias="champion")
    src = str(tmp_path / "in")
    held_out_frame(spark, digits, n=120).write.format("delta").save(src)
    config = _config(
        tmp_path,
        int8_artifact,
        src,
        fraction=1.0,
        reference="models:/shadow-digits-reference@champion",
    )
    result = _score(tmp_path, config)
    assert result.exit_code == 0, result.output
    shadow = _summary(tmp_path)["shadow"]
    assert shadow["rows_shadowed"] == 120 and shadow["verdict"] == "pass"
    assert shadow["reference"]["registered_version"] == "1"
    assert shadow["reference"]["registered_alias"] == "champion"
    assert shadow["reference"]["sha256"] == reference.sha256
    (row,) = spark.read.format("delta").load(str(tmp_path / "history")).collect()
    assert row["reference_registered_version"] == "1"


def test_a_text_embedding_run_records_cosine_metrics(spark, minilm_onnx, tmp_path):
    from leanscore.bench.text_data import text_table
    from leanscore.compression.build import write_text_artifact
    from leanscore.compression.quantization import dynamic_int8

    fp32 = write_text_artifact(minilm_onnx, tmp_path / "fp32", name="minilm-fp32", max_length=64)
    int8 = write_text_artifact(
        dynamic_int8(minilm_onnx), tmp_path / "int8", name="minilm-int8", max_length=64
    )
    texts = list(text_table(24, seed=11)["text"])
    src = str(tmp_path / "docs")
    frame = pd.DataFrame({"doc_id": np.arange(len(texts)), "text": texts})
    spark.createDataFrame(frame, "doc_id long, text string").write.format("delta").save(src)
    config = {
        "artifact": str(int8.path),
        "input": {"path": src},
        "output": {"path": str(tmp_path / "out")},
        "key_columns": ["doc_id"],
        "summary_path": str(tmp_path / "summary.json"),
        "path_threshold_bytes": 0,
        "shadow": {"reference": str(fp32.path), "fraction": 1.0, "min_cosine_p1": 0.9},
    }
    path = write_yaml(tmp_path / "embed.yaml", config)
    result = run_cli("embed", "--config", path, "--run-date", DAY)
    assert result.exit_code == 0, result.output
    shadow = _summary(tmp_path)["shadow"]
    metrics = {m["name"]: m for m in shadow["metrics"]}
    assert shadow["rows_shadowed"] == len(texts) and shadow["verdict"] == "pass"
    mean, p1 = metrics["cosine_mean"], metrics["cosine_p1"]
    assert 0.97 < mean["value"] < 1.0 and mean["ci_low"] < mean["value"] < mean["ci_high"]
    assert p1["ci_low"] <= p1["value"] <= p1["ci_high"] and p1["value"] <= mean["value"]
    assert p1["limit"] == 0.9 and mean["limit"] == 0.98
    assert shadow["out_of_range"] == {} and shadow["per_class"] == []


def test_an_empty_sample_on_a_tiny_table_is_reported(spark, digits, int8_artifact, tmp_path):
    src = str(tmp_path / "in")
    held_out_frame(spark, digits, n=3).write.format("delta").save(src)
    keys = pa.table({"row_id": pa.array(np.arange(3), pa.int64())})
    from leanscore.udfs.shadow import date_seed, sample_mask

    assert not sample_mask(keys, 0.001, date_seed(DAY)).any()  # none of 3 rows is sampled
    result = _score(tmp_path, _config(tmp_path, int8_artifact, src, fraction=0.001))
    assert result.exit_code == 0, result.output
    assert "note: shadow sample is empty: none of 3 rows" in result.output
    shadow = _summary(tmp_path)["shadow"]
    assert shadow["verdict"] == "empty_sample" and shadow["metrics"] == []


@pytest.mark.parametrize(
    ("shadow", "extra", "message"),
    [
        ({"fraction": 0}, {}, "shadow.fraction: Input should be greater than 0"),
        ({"fraction": 1.5}, {}, "shadow.fraction: Input should be less than or equal to 1"),
        ({}, {"key_columns": []}, "shadow samples rows by a hash of their key columns"),
        ({}, {"engine": "pandas"}, "engine 'pandas' scores no shadow sample"),
    ],
)
def test_bad_shadow_settings_are_refused_in_one_line(tmp_path, artifact, shadow, extra, message):
    config = {**_config(tmp_path, artifact, str(tmp_path / "in"), **shadow), **extra}
    result = _score(tmp_path, config)
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.strip().splitlines()
    assert message in line


def test_a_reference_with_another_contract_is_refused_before_any_spark_job(
    int8_artifact, columns_artifact, tmp_path
):
    """Other feature columns, or a threshold of another task: one line, nothing read or
    written. (No Spark session is needed to refuse.)"""
    src = str(tmp_path / "in")
    other = _config(tmp_path, int8_artifact, src, reference=str(columns_artifact.path))
    result = _score(tmp_path, other)
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.strip().splitlines()
    assert "does not score like artifact 'digits-small-int8': features.columns" in line
    wrong_task = _config(tmp_path, int8_artifact, src, min_cosine_mean=0.9)
    result = _score(tmp_path, wrong_task)
    assert result.exit_code == 1 and "shadow.min_cosine_mean is a threshold of another" in (
        result.stderr
    )
    assert not (tmp_path / "out").exists() and not (tmp_path / "history").exists()


def _run_of(task: str, **thresholds):
    """A ShadowRun for ``task`` with stand-in artifacts: the verdict reads only the task."""
    from types import SimpleNamespace

    from leanscore.jobs.shadow import ShadowConfig, ShadowRun

    config = ShadowConfig(**thresholds)
    artifact = SimpleNamespace(manifest=SimpleNamespace(task=task))
    return ShadowRun(config, artifact, artifact, None, None, config.thresholds(task))


@pytest.mark.parametrize(
    ("task", "row", "thresholds", "breached"),
    [
        # 100 cosines: mean 0.99 (sd 0.01); the p1 grid value is 0.95
        ("embedding", {"n": 100, "sum": 99.0, "sum_sq": 98.0199}, {}, set()),
        ("embedding", {"n": 100, "sum": 99.0, "sum_sq": 98.0199}, {"min_cosine_p1": 0.96},
         {"cosine_p1"}),
        ("embedding", {"n": 100, "sum": 97.0, "sum_sq": 94.0999}, {}, {"cosine_mean"}),
        ("regression", {"n": 50, "sum": 1.0, "sum_sq": 0.03}, {}, set()),
        ("regression", {"n": 50, "sum": 5.0, "sum_sq": 0.6}, {}, {"relative_error"}),
    ],
)  # fmt: skip
def test_each_threshold_passes_and_breaches(task, row, thresholds, breached):
    from leanscore.jobs.shadow import QUANTILE_GRID, judge

    quantiles = [0.95 if q <= 0.01 else 0.99 for q in QUANTILE_GRID]
    metrics = judge(_run_of(task, **thresholds), {**row, "quantiles": quantiles})
    assert {m["name"] for m in metrics if m["breached"]} == breached
    for m in metrics:
        if m["ci_low"] is not None:
            assert m["ci_low"] <= m["value"] <= m["ci_high"]


def test_intervals_are_the_textbook_ones():
    from leanscore.jobs.shadow import QUANTILE_GRID, mean_interval, quantile_interval, wilson

    low, high = wilson(95, 100)  # Wilson's interval for 95 of 100
    assert (round(low, 4), round(high, 4)) == (0.8882, 0.9785)
    assert wilson(100, 100)[1] == 1.0 and wilson(100, 100)[0] < 1.0  # no zero-width interval
    mean, lo, hi = mean_interval(10.0, 10.0 + 99 * 0.0, 10)  # ten equal values
    assert mean == 1.0 and lo == hi == 1.0
    assert mean_interval(0.5, 0.25, 1) == (0.5, None, None)  # one row: no interval
    quantiles = list(QUANTILE_GRID)  # the identity: quantile q is q
    value, lo, hi = quantile_interval(quantiles, 10_000)
    assert value == 0.01 and lo == pytest.approx(0.008) and hi == pytest.approx(0.012)


def test_batch_summaries_add_up_whatever_classes_each_batch_saw():
    """Each batch sums its own comparisons; one that shadowed no row, or saw only the low
    classes, carries shorter per-class vectors, and the driver's totals still line up."""
    from types import SimpleNamespace

    from leanscore.jobs.shadow import ShadowConfig, ShadowRun, totals

    manifest = SimpleNamespace(
        task="classification",
        class_labels=["a", "b", "c", "d"],
        input_range=SimpleNamespace(low=[0.0, 0.0]),  # two features with a calibrated range
    )
    artifact = SimpleNamespace(manifest=manifest)
    run = ShadowRun(ShadowConfig(), artifact, artifact, None, None, {})

    def batch(n, agree, class_n, class_agree, oor):
        return {
            "n": n, "sum": agree, "sum_sq": agree, "diff_sum": 0.1 * n, "diff_sum_sq": 0.01 * n,
            "seconds": 0.5, "class_n": class_n, "class_agree": class_agree, "out_of_range": oor,
        }  # fmt: skip

    batches = [
        batch(3, 2.0, [1, 0, 2], [1.0, 0.0, 1.0], [0, 5]),
        batch(0, 0.0, [], [], [0, 0]),  # no row of this batch fell in the sample
        batch(4, 4.0, [0, 0, 0, 4], [0.0, 0.0, 0.0, 4.0], [1, 0]),
    ]
    row = totals(run, {"batches": batches})
    assert (row["n"], row["sum"], row["seconds"]) == (7, 6.0, 1.5)
    assert [row[f"class_n_{k}"] for k in range(4)] == [1, 0, 2, 4]
    assert [row[f"class_agree_{k}"] for k in range(4)] == [1.0, 0.0, 1.0, 4.0]
    assert (row["oor_0"], row["oor_1"]) == (1, 5)
    empty = totals(run, {"batches": []})  # an empty table: nothing shadowed, nothing divided
    assert empty["n"] == 0 and empty["class_n_3"] == 0
