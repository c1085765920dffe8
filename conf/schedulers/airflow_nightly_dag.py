"""Airflow DAG example: leanscore's nightly scoring job and a weekly benchmark.

Copy into the Airflow ``dags/`` folder and set the Airflow Variable ``leanscore_home`` to the
project checkout on the workers (with its ``.venv`` made by ``make setup``; Java 17 installed).
Two ways to run the nightly task; keep one:

- ``score_local``: ``leanscore score`` on the Airflow worker itself (local Spark with Delta),
  or against Spark Connect / Databricks serverless when ``SPARK_REMOTE`` is set in its env;
- ``score_spark_submit``: the same CLI through spark-submit on a standalone/YARN/K8s cluster,
  with the code shipped as the built wheel (needs apache-airflow-providers-apache-spark).

``{{ ds }}`` is the run's logical date, so a backfill or a rerun rewrites exactly that date's
partition; leanscore exits non-zero on any failure, which fails the task.
"""

from __future__ import annotations

import datetime as dt

from airflow import DAG
from airflow.models import Variable
from airflow.operators.bash import BashOperator

HOME = Variable.get("leanscore_home", default_var="/opt/leanscore")
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin"}

with DAG(
    dag_id="leanscore_nightly",
    schedule="30 2 * * *",
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": dt.timedelta(minutes=10)},
    tags=["leanscore", "scoring"],
) as nightly:
    score_local = BashOperator(
        task_id="score_local",
        bash_command=(
            f"cd {HOME} && .venv/bin/leanscore score --config conf/nightly.yaml "
            "--run-date {{ ds }}"
        ),
        env=ENV,
    )

    try:
        from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
    except ImportError:  # the Spark provider is optional; the Bash task above needs nothing
        SparkSubmitOperator = None

    if SparkSubmitOperator is not None:
        # Connection spark_default: host spark://MASTER, port 7077. The wheel comes from
        # `.venv/bin/pip wheel --no-deps --no-build-isolation -w dist .`.
        score_spark_submit = SparkSubmitOperator(
            task_id="score_spark_submit",
            conn_id="spark_default",
            application=f"{HOME}/conf/schedulers/spark_submit_main.py",
            application_args=[
                "score",
                "--config",
                f"{HOME}/conf/nightly.yaml",
                "--run-date",
                "{{ ds }}",
            ],  # fmt: skip
            py_files=f"{HOME}/dist/leanscore-0.1.0-py3-none-any.whl",
            jars="{{ var.value.leanscore_delta_jars }}",
            conf={
                "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
                "spark.sql.catalog.spark_catalog": (
                    "org.apache.spark.sql.delta.catalog.DeltaCatalog"
                ),
                "spark.pyspark.python": f"{HOME}/.venv/bin/python",
            },
            env_vars={**ENV, "PYSPARK_PYTHON": f"{HOME}/.venv/bin/python"},
        )

with DAG(
    dag_id="leanscore_weekly_bench",
    schedule="0 4 * * 0",
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    tags=["leanscore", "cost"],
) as weekly:
    BashOperator(
        task_id="bench",
        bash_command=(
            f"cd {HOME} && .venv/bin/leanscore bench --config conf/bench.yaml "
            "--out bench-output/{{ ds }}"
        ),
        env=ENV,
    )
