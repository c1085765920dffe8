"""Reruns and concurrency of the nightly job against one Delta table.

- the same date twice gives the same content (a replaceWhere overwrite, other dates untouched);
- two dates scored at the same time (two threads, one JVM, two Delta transactions) both commit;
- the same date scored twice at the same time never ends with lost or duplicated rows.
"""

from __future__ import annotations

import threading

import pytest
from conftest import held_out_frame
from delta.tables import DeltaTable
from leanscore.jobs.score import ScoreConfig, run_score
from reliability_support import checksum, run_cli, write_yaml

ROWS = 80


@pytest.fixture(scope="module")
def source(spark, digits, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("rerun-input") / "features")
    held_out_frame(spark, digits, n=ROWS).repartition(2).write.format("delta").save(path)
    return path


def _config(artifact, src, out) -> dict:
    return {
        "artifact": str(artifact.path),
        "input": {"path": src, "format": "delta"},
        "output": {"path": out, "format": "delta"},
        "key_columns": ["row_id"],
        "passthrough_columns": ["label"],
        "batch_size": 32,
    }


def _content(spark, out, day):
    return (
        spark.read.format("delta")
        .load(out)
        .where(f"run_date = DATE'{day}'")
        .drop("scored_at")
        .orderBy("row_id")
        .toPandas()
    )


def test_same_date_twice_gives_the_same_table(spark, artifact, source, tmp_path):
    out = str(tmp_path / "out")
    config = write_yaml(tmp_path / "nightly.yaml", _config(artifact, source, out))
    for day in ("2026-05-01", "2026-05-02"):
        res = run_cli("score", "--config", config, "--run-date", day)
        assert res.exit_code == 0, res.output
    first = _content(spark, out, "2026-05-02")
    other = checksum(spark, out, "2026-05-01")

    res = run_cli("score", "--config", config, "--run-date", "2026-05-02")
    assert res.exit_code == 0, res.output
    assert f"scored {ROWS} rows" in res.output

    second = _content(spark, out, "2026-05-02")
    assert second.equals(first)
    assert checksum(spark, out, "2026-05-01") == other
    total = checksum(spark, out)
    assert total["rows"] == 2 * ROWS and total["keys"] == ROWS
    ops = [
        (h["operation"], h["operationParameters"].get("predicate", ""))
        for h in DeltaTable.forPath(spark, out).history().orderBy("version").collect()
    ]
    assert [op for op, _ in ops] == ["WRITE", "WRITE", "WRITE"]
    assert "2026-05-02" in ops[2][1], ops  # the rerun replaced only its own date


def _run_threads(spark, configs_and_days):
    results: dict[int, object] = {}

    def work(i, config, day):
        try:
            results[i] = run_score(spark, config, day)
        except Exception as err:  # noqa: BLE001 - recorded and asserted on below
            results[i] = err

    threads = [
        threading.Thread(target=work, args=(i, c, d)) for i, (c, d) in enumerate(configs_and_days)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a scoring thread hung"
    return [results[i] for i in range(len(threads))]


def test_two_dates_at_the_same_time_both_commit(spark, artifact, source, tmp_path):
    out = str(tmp_path / "out")
    config = ScoreConfig.model_validate(_config(artifact, source, out))
    run_score(spark, config, "2026-06-01")  # the table exists, as on any night but the first
    before = checksum(spark, out, "2026-06-01")

    results = _run_threads(spark, [(config, "2026-06-02"), (config, "2026-06-03")])
    for r in results:
        assert isinstance(r, dict), f"a concurrent run on a disjoint date failed: {r!r}"
        assert r["rows_in"] == r["rows_out"] == ROWS
    for day in ("2026-06-02", "2026-06-03"):
        got = checksum(spark, out, day)
        assert got["rows"] == got["keys"] == ROWS
        assert got["hash"] == before["hash"]  # same input, same model: same predictions
    assert checksum(spark, out, "2026-06-01") == before
    assert checksum(spark, out)["rows"] == 3 * ROWS


def test_same_date_at_the_same_time_loses_and_duplicates_nothing(spark, artifact, source, tmp_path):
    """Two writers replacing the same date race; Delta's optimistic concurrency lets at most
    one overwrite win per version. Whatever happens, the date ends with each row exactly once,
    and a run that lost the race raised instead of reporting success."""
    out = str(tmp_path / "out")
    config = ScoreConfig.model_validate(_config(artifact, source, out))
    run_score(spark, config, "2026-07-01")
    expected = checksum(spark, out, "2026-07-01")

    results = _run_threads(spark, [(config, "2026-07-01"), (config, "2026-07-01")])
    successes = [r for r in results if isinstance(r, dict)]
    failures = [r for r in results if not isinstance(r, dict)]
    print(f"same-date race: {len(successes)} committed, failures: {failures!r}")
    assert successes, f"neither concurrent rerun committed: {failures!r}"
    for err in failures:
        name = type(err).__name__ + str(err)
        assert "Concurrent" in name or "concurrent" in name, f"unexpected failure: {err!r}"
    assert checksum(spark, out, "2026-07-01") == expected
