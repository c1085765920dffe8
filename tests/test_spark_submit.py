"""The documented spark-submit command scores a table on a real local standalone cluster.

The command text is taken from docs/data-engineer.md (the block after
``<!-- spark-submit-command -->``) and run by bash as it stands; only its documented variables
(SPARK_MASTER, CONFIG, RUN_DATE, DIST) point it at this test's cluster, config and folders.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import yaml
from conftest import CLUSTER_WORKERS, DEMO_ROWS
from standalone_cluster import ensure_workers

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- spark-submit-command -->"
RUN_DATE = "2026-11-29"


def documented_command() -> str:
    text = (ROOT / "docs" / "data-engineer.md").read_text()
    assert MARKER in text, "docs/data-engineer.md lost its spark-submit command"
    block = re.search(r"```sh\n(.*?)```", text[text.index(MARKER) :], re.S)
    assert block, "no ```sh block after the spark-submit marker"
    return block.group(1)


def test_documented_spark_submit_scores_on_a_standalone_cluster(
    demo_run, tmp_path, spark, standalone_cluster
):
    demo = demo_run[0]
    out = tmp_path / "predictions"
    config = tmp_path / "nightly.yaml"
    nightly = yaml.safe_load((ROOT / "conf" / "nightly.yaml").read_text())
    nightly.update(
        artifact=str(demo / "artifacts" / "digits-mlp-pruned-int8"),
        input={"path": str(demo / "tables" / "digits_features"), "format": "delta"},
        output={"path": str(out), "format": "delta"},
        summary_path=str(tmp_path / "summary.json"),
    )
    config.write_text(yaml.safe_dump(nightly))

    cluster = standalone_cluster  # the session's (conftest), shared with test_cluster_faults
    ensure_workers(cluster, CLUSTER_WORKERS)
    earlier = {a["id"] for a in _apps(cluster)}
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_REMOTE", "PYSPARK_PYTHON")}
    env.update(
        SPARK_MASTER=cluster.master_url,
        CONFIG=str(config),
        RUN_DATE=RUN_DATE,
        DIST=str(tmp_path / "dist"),
        SPARK_LOCAL_IP="127.0.0.1",
    )
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", documented_command()],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (
        f"spark-submit failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}\n{cluster.logs()}"
    )

    # The job ran as an application of the standalone master, on its worker's executors.
    ran = {a["id"]: a["name"] for a in _apps(cluster) if a["id"] not in earlier}
    apps = list(ran.values())
    assert "leanscore-score" in apps, apps  # get_spark's app name
    assert f"scored {DEMO_ROWS:,} rows" in proc.stdout
    assert len(list((tmp_path / "dist").glob("leanscore-*.whl"))) == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["rows_in"] == summary["rows_out"] == DEMO_ROWS
    written = spark.read.format("delta").load(str(out)).toPandas()
    assert len(written) == DEMO_ROWS and written["row_id"].is_unique
    assert {str(d) for d in written["run_date"]} == {RUN_DATE}
    assert (written["prediction"] == written["label"]).mean() > 0.7
    # The wheel was shipped to the executor (Spark fetches --py-files into its work folder).
    work = cluster.root / "work"
    shipped = [p for app in ran for p in work.glob(f"worker-*/{app}/*/leanscore-*.whl")]
    assert shipped, sorted(str(p) for p in work.rglob("*"))[:20]


def _apps(cluster) -> list[dict]:
    """The master's applications, finished and running."""
    state = cluster.state()
    return state["completedapps"] + state["activeapps"]
