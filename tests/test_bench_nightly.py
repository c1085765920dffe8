"""The nightly-job bench: the fixed/per-row split, its targets, and both jobs run as processes."""

from __future__ import annotations

import pytest
from leanscore.bench.nightly import (
    VARIANTS,
    NightlyBenchConfig,
    NightlyTargets,
    TreeCpuMeter,
    Workload,
    analyse,
    ceilings,
    check_targets,
    committed_rows,
    limit_rows,
    line_through,
    local_cores,
    process_kind,
    report_lines,
    run_process,
    variant_command,
)
from pydantic import ValidationError


def test_line_through_two_sizes_is_the_exact_intercept_and_slope():
    line = line_through([200_000, 1_000_000], [12.0 + 2e-5 * 200_000, 12.0 + 2e-5 * 1_000_000])
    assert line.fixed_s == pytest.approx(12.0)
    assert line.per_row_s == pytest.approx(2e-5)
    assert line.at(2_000_000) == pytest.approx(52.0)


def test_line_through_more_sizes_is_least_squares():
    rows = [100, 200, 300, 400]
    noise = [0.5, -0.5, -0.5, 0.5]  # symmetric: the fit is the noiseless line
    line = line_through(rows, [3.0 + 0.01 * r + e for r, e in zip(rows, noise, strict=True)])
    assert line.fixed_s == pytest.approx(3.0)
    assert line.per_row_s == pytest.approx(0.01)


def test_line_through_refuses_a_single_size():
    with pytest.raises(ValueError, match="two different table sizes"):
        line_through([1000, 1000], [5.0, 6.0])
    with pytest.raises(ValueError, match="2 sizes but 1 times"):
        line_through([1000, 2000], [5.0])


def test_targets_met_and_not_met():
    targets = NightlyTargets(small_x=4.0, large_x=6.0, fixed_cost_cut_x=2.0)
    met = check_targets(
        small_x=4.0, large_x=6.5, fixed_s=7.0, targets=targets, fixed_cost_before_s=14.0
    )
    assert [t["met"] for t in met] == [True, True, True]
    missed = check_targets(
        small_x=3.9, large_x=5.9, fixed_s=7.1, targets=targets, fixed_cost_before_s=14.0
    )
    assert [t["met"] for t in missed] == [False, False, False]
    assert missed[2]["value"] == pytest.approx(14.0 / 7.1)
    no_reference = check_targets(
        small_x=5.0, large_x=7.0, fixed_s=1.0, targets=targets, fixed_cost_before_s=None
    )
    assert len(no_reference) == 2


def test_the_phases_before_scoring_must_be_cut_by_half_from_their_reference():
    targets = NightlyTargets()
    common = {"small_x": 1.0, "large_x": 1.0, "fixed_s": 1.0, "fixed_cost_before_s": None}
    met = check_targets(
        **common, targets=targets, before_scoring_s=6.45, before_scoring_before_s=12.9
    )[-1]
    missed = check_targets(
        **common, targets=targets, before_scoring_s=6.5, before_scoring_before_s=12.9
    )[-1]
    assert "before scoring" in met["target"] and "12.9 s" in met["target"]
    assert met["met"] and met["value"] == pytest.approx(2.0) and met["want"] == ">= 2x"
    assert not missed["met"] and missed["value"] == pytest.approx(12.9 / 6.5)
    no_reference = check_targets(**common, targets=targets, before_scoring_s=5.0)
    assert len(no_reference) == 2


@pytest.mark.parametrize(
    ("measure", "named", "at_target", "past_target", "want"),
    [
        ("limit_x", "limit", 2.0, 2.01, "<= 2x"),  # at most 2x its limit
        ("per_row_x", "per row", 8.0, 7.99, ">= 8x"),  # at least 8x PyTorch's per-row cost
    ],
)
def test_an_optional_target_is_met_at_its_multiple_and_missed_past_it(
    measure, named, at_target, past_target, want
):
    targets = NightlyTargets(**{measure: at_target})
    common = {"small_x": 1.0, "large_x": 1.0, "fixed_s": 1.0, "fixed_cost_before_s": None}
    met = check_targets(**common, targets=targets, **{measure: at_target})[-1]
    missed = check_targets(**common, targets=targets, **{measure: past_target})[-1]
    assert named in met["target"] and met["met"] and met["want"] == want
    assert not missed["met"]
    assert len(check_targets(**common, targets=targets)) == 2  # not measured: no row


def _result(variant, rows, wall, phases=None):
    return {"variant": variant, "rows": rows, "wall_s": wall, "rows_per_s": rows / wall} | (
        {"phases": phases} if phases else {}
    )


def test_analyse_splits_each_variant_and_phase_and_checks_the_ratios():
    config = NightlyBenchConfig(small_rows=1000, large_rows=3000, fixed_cost_before_s=10.0)
    results = [
        _result("leanscore", 1000, 6.0, {"count": 1.0, "score_write": 2.0}),
        _result("leanscore", 3000, 8.0, {"count": 1.0, "score_write": 4.0}),
        _result("pytorch", 1000, 12.0),
        _result("pytorch", 3000, 24.0),
    ]
    report = analyse(results, config)
    assert report["fixed_and_per_row"]["leanscore"]["fixed_s"] == pytest.approx(5.0)
    assert report["fixed_and_per_row"]["leanscore"]["per_million_rows_s"] == pytest.approx(1000)
    assert report["fixed_and_per_row"]["pytorch"]["fixed_s"] == pytest.approx(6.0)
    assert report["x_pytorch"] == {"1000": pytest.approx(2.0), "3000": pytest.approx(3.0)}
    assert report["leanscore_phases"]["count"]["fixed_s"] == pytest.approx(1.0)
    assert report["leanscore_phases"]["score_write"]["fixed_s"] == pytest.approx(1.0)
    # 2x and 3x fall short of 4x and 6x; the fixed cost 5 s is exactly half of 10 s; per row
    # PyTorch costs 6 s per thousand rows against leanscore's 1 s: 6x, short of 8x
    assert [t["met"] for t in report["targets"]] == [False, False, True, False]
    assert report["targets"][-1]["value"] == pytest.approx(6.0)
    text = "\n".join(report_lines(report | {"artifact": "a"}))
    assert "| leanscore | 3,000 | 8.00 |  | 375 | 3.00x |" in text
    assert "| NO |" in text


def test_analyse_splits_the_cpu_line_by_process():
    """Each process kind gets its own line through the two sizes, and the report prints it."""
    config = NightlyBenchConfig(small_rows=1000, large_rows=3000)

    def timed(variant, rows, wall, jvm, workers):
        split = {"driver": 2.0, "jvm": jvm, "python_workers": workers, "other": 0.0}
        return _result(variant, rows, wall) | {
            "cpu_s": sum(split.values()),
            "cpu_by_process": split,
        }

    results = [
        timed("leanscore", 1000, 6.0, 5.0, 1.0),
        timed("leanscore", 3000, 8.0, 7.0, 5.0),
        timed("pytorch", 1000, 12.0, 4.0, 3.0),
        timed("pytorch", 3000, 24.0, 6.0, 15.0),
    ]
    report = analyse(results, config)
    lean = report["cpu_by_process"]["leanscore"]
    assert lean["jvm"]["fixed_cpu_s"] == pytest.approx(4.0)
    assert lean["jvm"]["per_million_rows_cpu_s"] == pytest.approx(1000)
    assert lean["python_workers"]["per_million_rows_cpu_s"] == pytest.approx(2000)
    assert lean["driver"]["per_million_rows_cpu_s"] == pytest.approx(0)
    assert report["cpu_by_process"]["pytorch"]["python_workers"]["fixed_cpu_s"] == pytest.approx(-3)
    text = "\n".join(report_lines(report | {"artifact": "a"}))
    assert "| leanscore | python workers | -1.00 | 2000.00 |" in text
    # results without the split (an older report, or no /proc) print no split
    plain = analyse(
        [{k: v for k, v in r.items() if k != "cpu_by_process"} for r in results], config
    )
    assert plain["cpu_by_process"] == {}
    assert "python workers" not in "\n".join(report_lines(plain | {"artifact": "a"}))


def test_analyse_sums_the_fixed_parts_of_the_phases_before_scoring():
    config = NightlyBenchConfig(small_rows=1000, large_rows=3000, before_scoring_before_s=8.0)
    early = {"before_job": 2.0, "open_input": 0.5, "count": 0.5, "plan": 0.5}
    results = [
        _result("leanscore", 1000, 6.0, early | {"score_write": 2.0}),
        _result("leanscore", 3000, 8.0, early | {"plan": 1.5, "score_write": 4.0}),
        _result("pytorch", 1000, 12.0),
        _result("pytorch", 3000, 24.0),
    ]
    (before,) = [t for t in analyse(results, config)["targets"] if "before scoring" in t["target"]]
    # plan's fixed part is 0.0 s (0.5 s at 1,000 rows, 1.5 s at 3,000): 3.0 s in all
    assert before["value"] == pytest.approx(8.0 / 3.0) and before["met"]
    without = analyse(results, NightlyBenchConfig(small_rows=1000, large_rows=3000))
    assert not [t for t in without["targets"] if "before scoring" in t["target"]]


def limit_results() -> list[dict]:
    """Two sizes of both jobs: leanscore 4.5 s fixed, 1.5 s per thousand rows (score+write
    3 s then 6 s); PyTorch 6 s fixed, 6 s per thousand."""
    return [
        _result("leanscore", 1000, 6.0, {"score_write": 3.0}),
        _result("leanscore", 3000, 9.0, {"score_write": 6.0}),
        _result("pytorch", 1000, 12.0),
        _result("pytorch", 3000, 24.0),
    ]


def test_score_write_is_set_against_the_sum_of_its_parts_alone_at_each_size():
    config = NightlyBenchConfig(small_rows=1000, large_rows=3000)
    results = limit_results()

    def parts(read, model, write):
        return {"read_s": read, "model_s": model, "write_s": write, "how": "alone"} | {
            "limit_s": read + model + write
        }

    limits = {1000: parts(0.5, 0.25, 0.25), 3000: parts(1.0, 0.5, 1.0)}
    table = limit_rows(results, limits)
    assert table["1000"]["x"] == pytest.approx(3.0) and table["3000"]["x"] == pytest.approx(2.4)
    report = analyse(results, config, limits)
    assert report["limit"] == table and report["limit_how"] == "alone"
    (limit_target,) = [t for t in report["targets"] if "limit" in t["target"]]
    assert limit_target["value"] == pytest.approx(2.4) and not limit_target["met"]
    text = "\n".join(report_lines(report | {"artifact": "a"}))
    assert "| 3,000 | 6.00 | 1.00 | 0.50 | 1.00 | 2.50 | 2.40x |" in text
    assert not [t for t in analyse(results, config)["targets"] if "limit" in t["target"]]


def test_ceilings_say_how_far_the_ratios_can_go_from_the_fixed_cost_and_the_limit():
    config = NightlyBenchConfig(small_rows=1000, large_rows=3000)
    results = limit_results()
    alone = {"read_s": 0.5, "model_s": 0.25, "write_s": 0.25, "how": "alone"}
    limits = {1000: alone | {"limit_s": 1.0}, 3000: alone | {"limit_s": 2.5}}
    report = analyse(results, config, limits)
    reach = report["ceilings"]
    assert reach == ceilings(report)
    # leanscore's fixed cost is 4.5 s: PyTorch's 12 s and 24 s runs over it
    assert reach["x_with_no_per_row_cost"] == {
        "1000": pytest.approx(12 / 4.5),
        "3000": pytest.approx(24 / 4.5),
    }
    # PyTorch 6 s per thousand rows, the limit's sum 0.75 s per thousand
    assert reach["per_row_x_at_limit"] == pytest.approx(8.0)
    text = "\n".join(report_lines(report | {"artifact": "a"}))
    assert "at most 2.67x at 1,000 rows and 5.33x at 3,000 rows as fast" in text
    assert "about 8.00x lower than PyTorch's" in text and "a reference rather than a bound" in text
    assert "at most 8.00x" not in text  # the limit's sum is no floor, so no bound either
    # without the limit only the fixed cost's ceiling; without PyTorch none
    assert "per_row_x_at_limit" not in analyse(results, config)["ceilings"]
    assert ceilings({**report, "fixed_and_per_row": {"leanscore": {"fixed_s": 4.5}}}) == {}


@pytest.mark.slow
def test_the_limit_measures_each_part_of_a_real_job_alone(spark, artifact, tmp_path):
    """Reading, the model and writing alone for a real score config on a real Delta table, with
    a real ONNX Runtime model: every part takes time, the write leaves nothing behind, and the
    output rows are the job's (its keys, outputs and lineage)."""
    import datetime as dt

    from leanscore.bench.demo.datagen import write_digits_table
    from leanscore.bench.limit import measure_limit
    from leanscore.jobs.score import ScoreConfig

    table = str(tmp_path / "input")
    write_digits_table(spark, table, 2000, partitions=2)
    config = ScoreConfig.model_validate(
        {
            "artifact": str(artifact.path),
            "input": {"path": table, "format": "delta"},
            "output": {"path": str(tmp_path / "never-written"), "format": "delta"},
            "key_columns": ["row_id"],
            "passthrough_columns": ["label"],
            "batch_size": 256,
        }
    )
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    limit = measure_limit(
        spark, config, dt.date(2026, 11, 28), cores=2, rounds=1, model_rows=500, scratch=scratch
    )
    assert limit["rows"] == 2000 and limit["output_rows"] == 2000 and limit["model_rows"] == 500
    for part in ("read_s", "model_s", "write_s"):
        assert limit[part] > 0 and len(limit["all_s"][part[:-2]]) == 1
    assert limit["limit_s"] == pytest.approx(limit["read_s"] + limit["model_s"] + limit["write_s"])
    assert "2 sessions side by side" in limit["how"] and "500 rows in memory" in limit["how"]
    # the job's own reader and writer: the scan's tasks read, the scoring tasks write
    assert "by pyarrow in the scan's tasks" in limit["how"]
    assert "tasks from Arrow files in the page cache" in limit["how"]
    assert not list(scratch.iterdir())  # every table it wrote is gone
    assert not (tmp_path / "never-written").exists()


def test_cpu_meter_counts_a_child_process_of_the_process(tmp_path):
    """A child that burns CPU for about a second, under a parent that sleeps: the parent's tree
    is charged the child's CPU time."""
    import subprocess
    import sys
    import time

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass\n"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn!r}])",
        ]
    )
    meter = TreeCpuMeter(parent.pid)
    while parent.poll() is None:
        meter.sample()
        time.sleep(0.05)
    assert 0.8 <= meter.seconds <= 3.0
    # the burning child is a Python process below the driver: it, not the driver, is charged
    split = meter.by_process
    assert sum(split.values()) == pytest.approx(meter.seconds)
    assert split["python_workers"] >= 0.8 and split["driver"] < 0.5
    assert split["jvm"] == 0


def test_process_kinds_follow_the_command_name():
    assert process_kind(True, "leanscore") == "driver"
    assert process_kind(True, "java") == "driver"  # the measured process is the driver
    assert process_kind(False, "java") == "jvm"
    assert process_kind(False, "python3.12") == "python_workers"
    assert process_kind(False, "bash") == "other"


def test_the_limit_is_refused_up_front_on_a_clusters_master(monkeypatch, tmp_path):
    from leanscore.bench.nightly import limit_cores, run_nightly_bench

    monkeypatch.setenv("LEANSCORE_SPARK_MASTER", "local[2]")
    assert limit_cores() == 2
    monkeypatch.setenv("LEANSCORE_SPARK_MASTER", "spark://driver:7077")
    config = NightlyBenchConfig(workload=str(tmp_path / "missing.yaml"))
    with pytest.raises(ValueError, match="set limit: false"):
        run_nightly_bench(config, tmp_path, config_dir=tmp_path)  # before the missing workload


def test_the_report_states_the_cores_a_local_master_runs_on():
    import os

    assert local_cores("local[*]") == os.cpu_count()
    assert local_cores("local[3]") == 3 and local_cores("local") == 1
    assert local_cores("spark://driver:7077") is None  # a cluster's: not known here


def test_config_refuses_a_torch_batch_larger_than_an_arrow_batch():
    with pytest.raises(ValidationError, match="torch_batch_sizes"):
        NightlyBenchConfig(torch_batch_sizes=[256, 20_000], arrow_batch_rows=10_000)
    assert NightlyBenchConfig().repeats >= 3  # one run of a process is no median


def test_config_wants_a_larger_second_size():
    with pytest.raises(ValueError, match="must be more than small_rows"):
        NightlyBenchConfig(small_rows=1000, large_rows=1000)
    with pytest.raises(ValueError, match="extra"):
        NightlyBenchConfig.model_validate({"sizes": [1, 2]})


@pytest.mark.slow
def test_both_jobs_run_as_processes_and_write_every_row(spark, tmp_path, monkeypatch):
    """One tiny run of each job as its own process, side by side: the real CLI with a real
    config, and the PySpark script with the PyTorch model, Delta in and out. One task slot each
    (the rows do not matter here, the processes do). Each job's driver JVM starts alike: the
    first run of a class path writes its class archive at exit, which must pass its check."""
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from conftest import make_artifact
    from leanscore.bench.demo.datagen import write_digits_table
    from leanscore.compression.models import digits_mlp

    rows = 1000
    monkeypatch.setenv("LEANSCORE_SPARK_MASTER", "local[1]")
    monkeypatch.setenv("LEANSCORE_CLASS_ARCHIVE", "1")
    monkeypatch.setenv("LEANSCORE_CLASS_ARCHIVE_DIR", str(tmp_path / "class-archives"))
    torch.manual_seed(0)
    model = digits_mlp().eval()
    state_dict = tmp_path / "model.pt"
    torch.save(model.state_dict(), state_dict)
    artifact = make_artifact(model, tmp_path / "artifact", name="tiny")
    table = str(tmp_path / "input")
    write_digits_table(spark, table, rows, partitions=1)
    workload = Workload(
        name="tiny",
        table=table,
        artifact=str(artifact.path),
        state_dict=str(state_dict),
        factory="leanscore.compression.models.digits_mlp",
        features=["features"],
        size=64,
        keep=["row_id", "label"],
        torch_batch_size=256,  # PyTorch's own best batch, not leanscore's
    )
    config = NightlyBenchConfig(small_rows=rows, large_rows=2 * rows, workdir=str(tmp_path))
    torch_command = variant_command("pytorch", config, workload, table, tmp_path)
    assert torch_command[torch_command.index("--batch-size") + 1] == "256"

    def run(variant: str) -> dict:
        run_dir = tmp_path / variant
        run_dir.mkdir()
        command = variant_command(variant, config, workload, table, run_dir)
        return run_process(variant, rows, command, run_dir)

    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(VARIANTS, pool.map(run, VARIANTS), strict=True))
    for variant, result in results.items():
        assert result["rows"] == rows and result["wall_s"] > 0
        assert committed_rows(tmp_path / variant / "output") == rows
    phases = results["leanscore"]["phases"]
    assert {"before_job", "count", "score_write", "verify", "exit"} <= set(phases)
    assert sum(phases.values()) == pytest.approx(results["leanscore"]["wall_s"])
    # one archive per job: leanscore's class path carries S3A's jars, the PyTorch script's not
    archives = list((tmp_path / "class-archives").glob("*.jsa"))
    assert len(archives) == 2 and not list((tmp_path / "class-archives").glob("*.unusable"))
    labels = {
        v: spark.read.format("delta")
        .load(str(tmp_path / v / "output"))
        .orderBy("row_id")
        .select("prediction")
        .toPandas()["prediction"]
        .tolist()
        for v in VARIANTS
    }
    agree = sum(a == b for a, b in zip(labels["leanscore"], labels["pytorch"], strict=True))
    assert agree >= 0.99 * rows  # the same model, fp32 in ONNX Runtime and in PyTorch
