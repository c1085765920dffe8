"""What a bench run leaves behind: report.json, report.md, report.html (self-contained: its
charts are inline PNGs, so it opens offline and travels as one file), PNG charts and Delta
history rows."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd
from leanscore.bench.decompose import accuracy_text
from leanscore.bench.timing import PARTS
from pyspark.sql import SparkSession

CHARTS = {
    "decomposition": "decomposition.png",
    "time_breakdown": "time_breakdown.png",
    "throughput": "throughput.png",
    "cost": "usd_per_million_rows.png",
    "accuracy_cost": "accuracy_vs_cost.png",
}
SHARE_COLORS = ("#457b9d", "#e76f51", "#e9c46a", "#8c8c8c")

HISTORY_COLUMNS = {
    "workload": "string",
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
    "accuracy_low": "double",
    "accuracy_high": "double",
    "agreement": "double",
    "max_abs_diff": "double",
    "cosine_mean": "double",
    "read_share": "double",
    "model_share": "double",
    "convert_share": "double",
    "spark_share": "double",
    "fixed_usd_per_night": "double",
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

    effects = [
        (name, row) for name, row in report["decomposition"]["effects"].items() if row["ratio"]
    ]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    labels = [name.replace("_", " ") for name, _ in effects]
    ratios = [row["ratio"] for _, row in effects]
    bar_colors = [
        "#8c8c8c" if row["met"] is None else ("#2a9d8f" if row["met"] else "#e76f51")
        for _, row in effects
    ]
    ax.barh(labels, ratios, color=bar_colors)
    for y, (_, row) in enumerate(effects):
        note = f" {row['ratio']:.2f}x" + (f" (target {row['target']:g}x)" if row["target"] else "")
        ax.text(row["ratio"], y, note, va="center", fontsize=9)
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_xlabel("rows/s ratio of two variants differing in one thing (green: target met)")
    ax.set_title(f"What each part buys{_for(report)}")
    ax.set_xlim(0, max(ratios, default=1.0) * 1.35)
    ax.invert_yaxis()
    fig.tight_layout()
    paths["decomposition"] = _save(fig, out / CHARTS["decomposition"])

    from leanscore.bench.timing import PART_LABELS

    timed = [v for v in variants if v.get("time_breakdown")]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    left = [0.0] * len(timed)
    for key, color in zip(PARTS, SHARE_COLORS, strict=True):
        shares = [100 * v["time_breakdown"]["shares"][key] for v in timed]
        ax.barh([v["name"] for v in timed], shares, left=left, color=color, label=PART_LABELS[key])
        left = [a + b for a, b in zip(left, shares, strict=True)]
    # drawn to the real sum: where the clocks measured more than the cores had, the bar runs
    # past the 100% line instead of being cut there
    ax.set_xlim(0, max([100.0, *left]) * 1.02)
    ax.axvline(100, color="black", lw=0.8)
    ax.set_xlabel("% of the run's core-seconds (cores x wall), measured inside the tasks")
    ax.set_title(f"Where the time goes{_for(report)}")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, -0.45), ncol=2, fontsize=8)
    ax.invert_yaxis()
    fig.tight_layout()
    paths["time_breakdown"] = _save(fig, out / CHARTS["time_breakdown"])

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


HTML_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; }
th { background: #f0f0f0; }
img { max-width: 100%; display: block; margin: 1em 0; }
code { background: #f6f6f6; padding: 0 0.2em; }
"""


def write_html(report: dict, out: Path, text: str | None = None) -> Path:
    """``report.html``: the markdown report rendered, every chart inlined as a base64 PNG."""
    from markdown_it import MarkdownIt

    text = markdown(report) if text is None else text
    for name in report["charts"].values():
        data = base64.b64encode((out / name).read_bytes()).decode("ascii")
        text = text.replace(f"]({name})", f"](data:image/png;base64,{data})")
    body = MarkdownIt("commonmark").enable("table").render(text)
    title = html.escape(f"leanscore bench{_for(report)}, {report['run_at']}")
    path = out / "report.html"
    path.write_text(
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>{HTML_STYLE}</style></head>\n"
        f"<body>\n{body}</body></html>\n"
    )
    return path


def _for(report: dict) -> str:
    return f", {report['workload']}" if report.get("workload") else ""


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
        shares = (v.get("time_breakdown") or {}).get("shares") or {}
        low, high = v.get("accuracy_interval") or (None, None)
        rows.append(
            {
                "workload": report.get("workload"),
                "run_id": report["run_id"],
                "run_at": report["run_at"],
                **{k: v.get(k) for k in HISTORY_COLUMNS if k in v},
                "accuracy_low": low,
                "accuracy_high": high,
                **{f"{k[:-2]}_share": shares.get(k) for k in PARTS},
                "agreement": fid.get("agreement"),
                "max_abs_diff": fid.get("max_abs_diff"),
                "cosine_mean": fid.get("cosine_mean"),
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
    """Append one row per variant to the Delta history at ``path`` (a path, or a catalog
    table name such as ``main.scoring.bench_history``, which the dashboard reads); return its
    new version."""
    from delta.tables import DeltaTable

    schema = ", ".join(f"{k} {t}" for k, t in HISTORY_COLUMNS.items())
    records = history_rows(report).to_dict("records")
    df = spark.createDataFrame([tuple(r.values()) for r in records], schema)
    writer = df.write.format("delta").mode("append").option("mergeSchema", "true")
    if is_table_name(path):
        writer.saveAsTable(path)
        table = DeltaTable.forName(spark, path)
    else:
        writer.save(path)
        table = DeltaTable.forPath(spark, path)
    return int(table.history(1).select("version").first()[0])


def is_table_name(history: str) -> bool:
    """``catalog.schema.table`` (or shorter), not a path or URI."""
    return "/" not in history and ":" not in history


def _fmt_pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def markdown(report: dict) -> str:
    env = report["environment"]
    variants = report["variants"]
    base = variants[0]
    workload = f"{report['workload']}, " if report.get("workload") else ""
    lines = [
        f"# leanscore bench, {workload}{report['run_at']}",
        "",
        f"{report['rows']:,} rows from `{report['input']}`, scored by every variant in one Spark "
        f"session ({env['spark_master']}, {report['cores']} cores), after a warm-up, "
        f"{report['repeats']} interleaved rounds into Spark's noop sink; medians shown. "
        f"Baseline: `{base['name']}`.",
        "",
        *torch_batch_lines(report),
        *[f"{note}\n" for note in report.get("notes") or []],
        "## Throughput and cost",
        "",
        "| variant | batch | rows/s | spread | rows/s/core | speed-up | core-s / M rows "
        "| $ / M rows | $ / night | $ / month | saved / month |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for v in variants:
        spread = 100 * v["wall_s_spread"] / v["wall_s"]
        batch = "" if v.get("batch_size") is None else f"{v['batch_size']:,}"
        lines.append(
            f"| {v['name']} | {batch} | {v['rows_per_s']:,.0f} | ±{spread / 2:.0f}% | "
            f"{v['rows_per_s_per_core']:,.0f} | {v['speedup']:.2f}x | "
            f"{v['core_seconds_per_million_rows']:.2f} | ${v['usd_per_million_rows']:.5f} | "
            f"${v['nightly_usd']:,.2f} | ${v['monthly_usd']:,.2f} | "
            f"${v['monthly_savings_usd']:,.2f} ({v['savings_pct']:.0f}%) |"
        )
    readers = {
        "scan": "the scan engine (pyarrow decodes the Parquet files inside the tasks, "
        "`udfs.engines.scan`)",
        "spark": "Spark's reader",
    }
    lines += [""] + [
        f"`{v['name']}` reads the input with {readers[v.get('engine', 'spark')]}." for v in variants
    ]
    lines += [
        "",
        "## Fidelity, size and CPU",
        "",
        "| variant | accuracy [95% interval] | agreement | max abs diff | model bytes | params "
        "| executor CPU s | process CPU s | process CPU s / M rows |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for v in variants:
        fid = v["fidelity"] or {}
        lines.append(
            f"| {v['name']} | {accuracy_text(v)} | {_fmt_pct(fid.get('agreement'))} | "
            f"{_num(fid.get('max_abs_diff'))} | {v['model_bytes']:,} | {_int(v['params'])} | "
            f"{_num(v['executor_cpu_s'])} | {_num(v['process_cpu_s'])} | "
            f"{_num(v['process_cpu_s_per_million_rows'])} |"
        )
    n = report.get("distinct_examples") or report["rows"]
    half = _half_width_points(variants)
    lines += [
        "",
        f"Accuracy intervals are Wilson 95% intervals over {n:,} independent examples"
        + (
            f" (the table's {report['rows']:,} rows are augmented copies of {n:,} distinct "
            f"held-out images, so a drop of about {half:.1f} points is within the noise)."
            if report.get("distinct_examples") and half is not None
            else "."
        ),
    ]
    if fid.get("reference"):
        lines += ["", f"Fidelity is measured against `{fid['reference']}` on every row."]
    lines += [
        "",
        "Executor CPU is Spark's `executorCpuTime` task metric: JVM task threads only, time "
        "inside Python UDF workers is not in it. Process CPU is the CPU time of the whole local "
        "process tree (JVM, Python daemon and UDF workers) during the run, from `/proc`.",
    ]
    lines += decomposition_lines(report) + breakdown_lines(report)
    bound = report.get("bound")
    if bound:
        lines += [
            "",
            "## Read-only passes and each model alone",
            "",
            bound["how"],
            "",
            "| pass | rows/s | rows/s/core |",
            "| --- | ---: | ---: |",
        ]
        for reader, p in bound["read_only_passes"].items():
            lines.append(
                f"| read-only, {reader} | {p['rows_per_s']:,.0f} | "
                f"{p['rows_per_s'] / report['cores']:,.0f} |"
            )
        for name, m in bound["models"].items():
            lines.append(
                f"| {name} alone in {m['runtime']} | {m['rows_per_s']:,.0f} | "
                f"{m['rows_per_s_per_core']:,.0f} |"
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


def torch_batch_lines(report: dict) -> list[str]:
    """How PyTorch's batch in predict_batch_udf was chosen (its best, not a fixed guess)."""
    sweep = report.get("torch_batch_sweep")
    if not sweep:
        if report.get("torch_batch_size") is None:
            return []
        return [
            f"PyTorch in `predict_batch_udf` runs at batches of {report['torch_batch_size']:,}.",
            "",
        ]
    speeds = ", ".join(f"{int(n):,}: {v:,.0f}" for n, v in sweep["rows_per_s_by_size"].items())
    return [
        f"PyTorch in `predict_batch_udf` runs at its best batch, {sweep['chosen']:,} rows "
        f"({sweep['how']}; rows/s by batch: {speeds}). The ONNX model in `predict_batch_udf` "
        f"runs at the same batch (the runtime pair differs in the runtime only); leanscore "
        f"scores batches of {report['batch_size']:,}"
        + (
            f", and the ONNX model runs in `predict_batch_udf` at {report['batch_size']:,} "
            "too, for the engine pair (which then differs in the engine only)."
            if sweep["chosen"] != report["batch_size"]
            else "."
        ),
        "",
    ]


def decomposition_lines(report: dict) -> list[str]:
    from leanscore.bench.decompose import candidates_lines, decomposition_rows

    d = report["decomposition"]
    lines = [
        "",
        "## What each part buys",
        "",
        "Each effect is the rows/s ratio of two variants of this run that differ in that one "
        "thing; the cost target is the monthly bill (fixed costs per night included) at the "
        "configured nightly rows. A target is met only by a variant within the quality "
        "budget (accuracy drop against the baseline, or agreement without labels); the "
        "compression, end-to-end and bill rows judge the fastest variant within it.",
        "",
        "| effect | ratio | variant | against | target | |",
        "| --- | ---: | --- | --- | --- | --- |",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in decomposition_rows(d)]
    lines += ["", *[f"- {line}" for line in candidates_lines(d)]]
    if d.get("product_of_parts") is not None:
        lines += [
            "",
            f"runtime x engine x reader x compression = {d['product_of_parts']:.2f}x "
            "(against the end-to-end ratio measured directly).",
        ]
    return lines


def breakdown_lines(report: dict) -> list[str]:
    from leanscore.bench.timing import PART_LABELS

    timed = [v for v in report["variants"] if v.get("time_breakdown")]
    if not timed:
        return []
    lines = [
        "",
        "## Where the time goes",
        "",
        "Shares of each variant's core-seconds (cores x wall of its median round), measured "
        "inside its tasks (`leanscore.bench.timing`): "
        + "; ".join(PART_LABELS[k] for k in PARTS)
        + ".",
        "",
        "| variant | core-s | " + " | ".join(PART_LABELS[k] for k in PARTS) + " | how |",
        "| --- | ---: | " + " | ".join("---:" for _ in PARTS) + " | --- |",
    ]
    for v in timed:
        t = v["time_breakdown"]
        cells = [f"{t[k]:.2f} s ({100 * t['shares'][k]:.0f}%)" for k in PARTS]
        lines.append(
            f"| {v['name']} | {t['core_s']:.2f} | " + " | ".join(cells) + f" | {t['how']} |"
        )
    return lines + over_measured_lines(timed)


def over_measured_lines(variants: list[dict]) -> list[str]:
    """Where the in-task clocks add up to more than the cores had (cores x wall), by how much:
    Spark's share is then shown as 0 and the other shares add up to more than 100%."""
    over = [v for v in variants if (v.get("time_breakdown") or {}).get("over_measured_s")]
    lines = []
    for v in over:
        t = v["time_breakdown"]
        share = t.get("over_measured_share", t["over_measured_s"] / t["core_s"])
        lines.append(
            f"- `{v['name']}`: the clocks measured {t['over_measured_s']:.2f} s "
            f"({100 * share:.1f}%) more than its {t['core_s']:.2f} core-seconds; its shares add "
            f"up to {100 * (1 + share):.0f}%."
        )
    return ["", "Over-measured:", "", *lines] if lines else []


def _num(x) -> str:
    if x is None:
        return "n/a"
    return f"{x:.3g}" if abs(x) < 1 else f"{x:,.2f}"


def _int(x) -> str:
    return "n/a" if x is None else f"{x:,}"


def _half_width_points(variants: list[dict]) -> float | None:
    """Half the widest accuracy interval among the variants, in points: how far apart two
    accuracies measured on these examples can be by chance alone."""
    widths = [
        (v["accuracy_interval"][1] - v["accuracy_interval"][0]) / 2
        for v in variants
        if v.get("accuracy_interval")
    ]
    return 100 * max(widths) if widths else None
