"""Shadow fidelity over time: the history table's metrics, one row per run and metric, and the
chart of each metric against its threshold (the cost report notebook draws it; the bundle's
dashboard runs ``SHADOW_QUERY`` on the same table).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame

SHADOW_QUERY = """SELECT run_date, recorded_at, job, model_name, model_sha256, reference_sha256,
       rows_shadowed, verdict, m.name AS metric, m.value AS value, m.ci_low AS ci_low,
       m.ci_high AS ci_high, m.limit AS threshold, m.breached AS breached
FROM {table} LATERAL VIEW explode(metrics) shadowed AS m"""
"""One row per run and metric, with its 95% interval and threshold. ``{table}``: the history
table's catalog name, or ``delta.`PATH``` for a path."""


SERIES_QUERY = """SELECT run_date, CONCAT_WS(' ', model_name, m.name) AS series, m.value AS value
FROM {table} LATERAL VIEW explode(metrics) shadowed AS m
UNION ALL
SELECT run_date, CONCAT_WS(' ', model_name, m.name, 'threshold') AS series, m.limit AS value
FROM {table} LATERAL VIEW explode(metrics) shadowed AS m"""
"""The dashboard's query: each metric and its threshold as series over run dates."""

DASHBOARD_TABLE = "main.scoring.shadow_history"
"""The table the bundle's dashboard reads (``shadow_history_table`` in databricks.yml)."""


def metrics_by_run(history: DataFrame) -> pd.DataFrame:
    """``SHADOW_QUERY`` on a loaded history table, ordered by run date and record time."""
    view = "leanscore_shadow_history"
    history.createOrReplaceTempView(view)
    query = SHADOW_QUERY.format(table=view) + " ORDER BY run_date, recorded_at"
    return history.sparkSession.sql(query).toPandas()


def plot_metrics(rows: pd.DataFrame, path: str | Path) -> Path:
    """One panel per metric: its value per run date (the last run of a date), the 95% interval
    as a band, the threshold as a dashed line and breaches marked; written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a driver or in CI
    import matplotlib.pyplot as plt

    if rows.empty:
        raise ValueError("the shadow history holds no measured run yet: nothing to chart")
    metrics = list(dict.fromkeys(rows["metric"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for model, part in rows[rows["metric"] == metric].groupby("model_name", sort=False):
            last = part.drop_duplicates("run_date", keep="last")
            dates = pd.to_datetime(last["run_date"])
            ax.plot(dates, last["value"], marker="o", label=model)
            if last["ci_low"].notna().any():
                ax.fill_between(dates, last["ci_low"], last["ci_high"], alpha=0.2)
            broken = last[last["breached"]]
            ax.scatter(pd.to_datetime(broken["run_date"]), broken["value"], color="red", zorder=3)
        ax.axhline(part["threshold"].iloc[-1], linestyle="--", color="grey", label="threshold")
        ax.set_title(metric)
        ax.tick_params(axis="x", rotation=30)
        ax.legend(fontsize=8)
    fig.suptitle("shadow fidelity per run date (95% intervals; red: breach)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
