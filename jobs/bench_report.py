"""What a bench run leaves behind: report.json, report.md, PNG charts and Delta history rows."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from pyspark.sql import SparkSession

CHARTS = {
    "throughput": "throughput.png",
    "cost": "usd_per_million_rows.png",
    "accuracy_cost": "accuracy_vs_cost.png",
}

HISTORY_COLUMNS = {
    "run_id": "string",
    "run_at": "string",
    "name": "string",
    "model": "string",
    "path": "string",
    "engine": "string",
    "compressed": "boolean",
    "rows": "bigint",
    "wall_s": "double",
    "wall_s_spread": "double",
    "rows_per_s": "double",
    "rows_per_s_per_core": "double",
    "executor_cpu_s": "double",
    "process_cpu_s": "double",
    "core_seconds_per_million_rows": "double",
    "usd_per_million_rows": "double",
    "nightly_usd": "double",
    "monthly_usd": "double",
    "savings_pct": "double",
    "model_bytes": "bigint",
    "params": "bigint",
    "accuracy": "double",
    "agreement": "double",
    "max_abs_diff": "double",
    "mean_cosine": "double",
    "bound_ratio": "double",
    "cores": "int",
    "input": "string",
    "instance": "string",
    "cpu_model": "string",
    "spark_master": "string",
    "spark_version": "string",
    "onnxruntime_version": "string",
    "torch_version": "string",
}


def write_json(report: dict, out: Path) -> Path:
    path = out / "report.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def write_charts(report: dict, out: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")  # no display on a driver or in CI
    import matplotlib.pyplot as plt

    variants = report["variants"]
    names = [v["name"] for v in variants]
    colors = ["#8c8c8c" if not v["compressed"] else "#2a9d8f" for v in variants]
    paths = {}

    fig, ax = plt.subplots(figsize=(9, 4.5))
    rps = [v["rows_per_s"] for v in variants]
    lows = [v["rows"] / max(v["wall_s_all"]) for v in variants]
    highs = [v["rows"] / min(v["wall_s_all"]) for v in variants]
    ax.barh(
        names,
        rps,
        color=colors,
        xerr=[  # clamped: the median and the extremes are rounded separately
            [max(0.0, r - lo) for r, lo in zip(rps, lows, strict=True)],
            [max(0.0, h - r) for r, h in zip(rps, highs, strict=True)],
        ],
    )
    bound = report.get("bound") or {}
    if bound.get("read_only"):
        ax.axvline(
            bound["read_only"]["rows_per_s"],
            ls="--",
            color="#e76f51",
            label="read-only pass (no model)",
        )
        ax.legend(loc="lower right")
    ax.set_xlabel("rows/s (median, bars: min..max of the rounds)")
    ax.set_title(f"Throughput, {report['rows']:,} rows on {report['cores']} cores")
    ax.invert_yaxis()
    fig.tight_layout()
    paths["throughput"] = _save(fig, out / CHARTS["throughput"])

    fig, ax = plt.subplots(figsize=(9, 4.5))
    usd = [v["usd_per_million_rows"] for v in variants]
    ax.barh(names, usd, color=colors)
    for y, value in enumerate(usd):
        ax.text(value, y, f" ${value:.4f}", va="center")
    ax.set_xlabel(f"$ per million rows ({report['pricing']['instance']['name']})")
    ax.set_title("Cost per million rows")
    ax.invert_yaxis()
    fig.tight_layout()
    paths["cost"] = _save(fig, out / CHARTS["cost"])

    fig, ax = plt.subplots(figsize=(7, 5))
    for v, color in zip(variants, colors, strict=True):
        acc = v["accuracy"]
        if acc is None and v["fidelity"] and "agreement" in v["fidelity"]:
            acc = v["fidelity"]["agreement"]
        if acc is None:
            continue
        ax.scatter(v["usd_per_million_rows"], 100 * acc, color=color, s=60)
        ax.annotate(
            v["name"],
            (v["usd_per_million_rows"], 100 * acc),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    has_labels = any(v["accuracy"] is not None for v in variants)
    ax.set_xlabel("$ per million rows")
    ax.set_ylabel("accuracy %" if has_labels else "agreement with the baseline %")
    ax.set_title("Accuracy against cost (up and left is better)")
    ax.set_xlim(left=0)
    fig.tight_layout()
    paths["accuracy_cost"] = _save(fig, out / CHARTS["accuracy_cost"])
    return paths


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def history_rows(report: dict) -> pd.DataFrame:
    env = report["environment"]
    rows = []
    for v in report["variants"]:
        fid = v["fidelity"] or {}
        rows.append(
            {
                "run_id": report["run_id"],
                "run_at": report["run_at"],
                **{k: v.get(k) for k in HISTORY_COLUMNS if k in v},
                "agreement": fid.get("agreement"),
                "max_abs_diff": fid.get("max_abs_diff"),
                "mean_cosine": fid.get("mean_cosine"),
                "cores": report["cores"],
                "input": report["input"],
                "instance": report["pricing"]["instance"]["name"],
                "cpu_model": env["cpu_model"],
                "spark_master": env["spark_master"],
                "spark_version": env["spark_version"],
                "onnxruntime_version": env["versions"].get("onnxruntime"),
                "torch_version": env["versions"].get("torch"),
            }
        )
    frame = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    return frame.astype(object).where(frame.notna(), None)


def append_history(spark: SparkSession, report: dict, path: str) -> int:
    """Append one row per variant to the Delta table at ``path``; return its new version."""
    schema = ", ".join(f"{k} {t}" for k, t in HISTORY_COLUMNS.items())
    records = history_rows(report).to_dict("records")
    df = spark.createDataFrame([tuple(r.values()) for r in records], schema)
    df.write.format("delta").mode("append").option("mergeSchema", "true").save(path)
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, path).history(1).select("version").first()[0])


def _fmt_pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def markdown(report: dict) -> str:
    env = report["environment"]
    variants = report["variants"]
    base = variants[0]
    lines = [
        f"# leanscore bench, {report['run_at']}",
        "",
        f"{report['rows']:,} rows from `{report['input']}`, scored by every variant in one Spark "
        f"session ({env['spark_master']}, {report['cores']} cores), after a warm-up, "
        f"{report['repeats']} interleaved rounds into Spark's noop sink; medians shown. "
        f"Baseline: `{base['name']}`.",
        "",
        "## Throughput and cost",
        "",
        "| variant | rows/s | spread | rows/s/core | speed-up | core-s / M rows | $ / M rows "
        "| $ / night | $ / month | saved / month |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for v in variants:
        spread = 100 * v["wall_s_spread"] / v["wall_s"]
        lines.append(
            f"| {v['name']} | {v['rows_per_s']:,.0f} | ±{spread / 2:.0f}% | "
            f"{v['rows_per_s_per_core']:,.0f} | {v['speedup']:.2f}x | "
            f"{v['core_seconds_per_million_rows']:.2f} | ${v['usd_per_million_rows']:.5f} | "
            f"${v['nightly_usd']:,.2f} | ${v['monthly_usd']:,.2f} | "
            f"${v['monthly_savings_usd']:,.2f} ({v['savings_pct']:.0f}%) |"
        )
    readers = {
        "scan": "the scan engine (pyarrow decodes the Parquet files inside the tasks, `udfs.scan`)",
        "spark": "Spark's reader",
    }
    lines += [""] + [
        f"`{v['name']}` reads the input with {readers[v.get('engine', 'spark')]}." for v in variants
    ]
    lines += [
        "",
        "## Fidelity, size and CPU",
        "",
        "| variant | accuracy | agreement | max abs diff | model bytes | params | "
        "executor CPU s | process CPU s | process CPU s / M rows | of bound | of read-only |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for v in variants:
        fid = v["fidelity"] or {}
        lines.append(
            f"| {v['name']} | {_fmt_pct(v['accuracy'])} | {_fmt_pct(fid.get('agreement'))} | "
            f"{_num(fid.get('max_abs_diff'))} | {v['model_bytes']:,} | {_int(v['params'])} | "
            f"{_num(v['executor_cpu_s'])} | {_num(v['process_cpu_s'])} | "
            f"{_num(v['process_cpu_s_per_million_rows'])} | {_fmt_pct(v['bound_ratio'])} | "
            f"{_fmt_pct(v['read_only_ratio'])} |"
        )
    if fid.get("reference"):
        lines += ["", f"Fidelity is measured against `{fid['reference']}` on every row."]
    lines += [
        "",
        "Executor CPU is Spark's `executorCpuTime` task metric: JVM task threads only, time "
        "inside Python UDF workers is not in it. Process CPU is the CPU time of the whole local "
        "process tree (JVM, Python daemon and UDF workers) during the run, from `/proc`.",
    ]
    bound = report.get("bound")
    if bound:
        lines += [
            "",
            "## The bound",
            "",
            bound["how"],
            "",
            "| pass | rows/s | rows/s/core |",
            "| --- | ---: | ---: |",
        ]
        passes = bound.get("read_only_passes") or {"spark": bound["read_only"]}
        for reader, p in passes.items():
            used = " (used)" if p["wall_s"] == bound["read_only"]["wall_s"] else ""
            lines.append(
                f"| read-only, {reader} reader{used} | {p['rows_per_s']:,.0f} | "
                f"{p['rows_per_s'] / report['cores']:,.0f} |"
            )
        for name, m in bound["models"].items():
            lines.append(
                f"| raw {m['runtime']} {name} | {m['rows_per_s']:,.0f} | "
                f"{m['rows_per_s_per_core']:,.0f} |"
            )
    t = report.get("targets")
    if t:
        met = t["met"]
        lines += [
            "",
            "## Targets",
            "",
            f"Best compressed variant `{t['best_compressed']}` against `{t['baseline']}`:",
            "",
            f"- throughput {t['speedup']:.2f}x (target >= 4x): "
            f"{'met' if met['speedup'] else 'NOT met'}",
            f"- cost per million rows {t['cost_ratio']:.3f} of the baseline (target <= 0.25): "
            f"{'met' if met['cost'] else 'NOT met'}",
            f"- accuracy lost {_num(t['accuracy_drop_points'])} points (target <= 1): "
            f"{'met' if met['accuracy'] else 'NOT met'}",
            f"- its share of the bound {_fmt_pct(t.get('bound_ratio'))} (target >= 85%): "
            f"{'met' if met.get('bound_ratio') else 'NOT met'}",
        ]
        if t.get("engine_vs_predict_batch_udf") is not None:
            lines.append(
                f"- leanscore vs predict_batch_udf on the identical fp32 ONNX model "
                f"{t['engine_vs_predict_batch_udf']:.2f}x (target >= 1.5x): "
                f"{'met' if met['engine_vs_predict_batch_udf'] else 'NOT met'}"
            )
    lines += ["", "## Cost model", "", report["cost_model"], ""]
    lines += [
        "## Charts",
        "",
        *[f"![{k}]({v})" for k, v in report["charts"].items()],
        "",
        "## Environment",
        "",
        f"- CPU: {env['cpu_model']}; AVX-512 VNNI: {env['avx512_vnni']}; AMX: {env['amx']}; "
        f"machine cores: {env['machine_cores']}",
        f"- Spark {env['spark_version']}, master {env['spark_master']}, {env['spark_cores']} "
        f"task cores, spark.task.cpus {env['task_cpus']}, Arrow batch "
        f"{env['arrow_batch_rows']} rows, scoring batch {report['batch_size']} rows",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v),
        f"- Python {env['python']} on {env['os']}",
        f"- load average at the start: {env['load_average']}",
        "",
        "Timings on a shared machine are noisy: compare variants within one run (they share "
        "the data, session and cores, and run interleaved), and read the spread column.",
        "",
    ]
    return "\n".join(lines)


def _num(x) -> str:
    if x is None:
        return "n/a"
    return f"{x:.3g}" if abs(x) < 1 else f"{x:,.2f}"


def _int(x) -> str:
    return "n/a" if x is None else f"{x:,}"
