"""The images workload's verdict: the five targets the seed's own case is held to, each met or
NOT met from one bench run, and where a task's time goes (reading, decoding, model, the rest).

Each ratio compares two variants that differ in one thing: the compressed artifact against the
fp32 export on the same engine and reader (bytes, accuracy, rows/s, bill), and against the
PyTorch model in ``predict_batch_udf`` at its best swept batch (the way teams score today).
The accuracy drop carries both 95% intervals, over the distinct test images the bench counts.

Decoding is part of converting a batch inside leanscore's tasks (the image family decodes the
PNG bytes there), so it is measured alone: the family's own ``decode_images`` on the same
images on one thread, its seconds per row times the rows carved out of the variant's
converting time.
"""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field

TORCH = "torch-fp32/predict_batch_udf"


class ImageTargets(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    bytes_x: float = Field(default=10.0, gt=0, description="fp32 bytes / compressed bytes")
    accuracy_drop_points: float = Field(default=1.0, ge=0)
    compression_x: float = Field(default=3.0, gt=0, description="leanscore rows/s, same engine")
    vs_pytorch_x: float = Field(default=6.0, gt=0, description="vs PyTorch in predict_batch_udf")
    monthly_bill_ratio: float = Field(default=0.5, gt=0, description="compressed / fp32 bill")


def _pair(report: dict) -> tuple[dict, dict, dict | None]:
    """(fp32 leanscore, compressed leanscore on the same engine, PyTorch predict_batch_udf)."""
    ours = [v for v in report["variants"] if v["path"] == "leanscore"]
    compressed = [v for v in ours if v["compressed"]]
    if not compressed:
        raise ValueError("the bench report has no compressed leanscore variant to judge")
    best = max(compressed, key=lambda v: v["rows_per_s"])
    fp32 = next((v for v in ours if not v["compressed"] and v["engine"] == best["engine"]), None)
    if fp32 is None:
        raise ValueError(f"no fp32 leanscore variant on engine {best['engine']!r} to compare")
    torch = next((v for v in report["variants"] if v["name"] == TORCH), None)
    return fp32, best, torch


# ImageTargets' fields in the order of verdict's rows.
TARGET_ORDER = (
    "bytes_x",
    "accuracy_drop_points",
    "compression_x",
    "vs_pytorch_x",
    "monthly_bill_ratio",
)


def stated_targets(rows: list[dict]) -> ImageTargets:
    """The targets a report's verdict rows were judged against (their ``target`` column)."""
    stated = [float(row["target"].split()[-1]) for row in rows]
    return ImageTargets(**dict(zip(TARGET_ORDER, stated, strict=True)))


def verdict(report: dict, targets: ImageTargets) -> list[dict]:
    """One row per target: measure, value, target, met, and the two variants compared."""
    fp32, comp, torch = _pair(report)
    pair = f"{comp['name']} vs {fp32['name']}"
    drop = None
    if fp32["accuracy"] is not None and comp["accuracy"] is not None:
        drop = round(100 * (fp32["accuracy"] - comp["accuracy"]), 3)
    rows = [
        _row(
            "model bytes, fp32 / compressed",
            fp32["model_bytes"] / comp["model_bytes"],
            targets.bytes_x,
            at_least=True,
            pair=pair,
        ),
        _row(
            "accuracy drop, points",
            drop,
            targets.accuracy_drop_points,
            at_least=False,
            pair=pair,
            note=_intervals(fp32, comp, report.get("distinct_examples")),
        ),
        _row(
            "leanscore rows/s, compressed / fp32, same engine",
            comp["rows_per_s"] / fp32["rows_per_s"],
            targets.compression_x,
            at_least=True,
            pair=pair,
        ),
        _row(
            "compressed leanscore / PyTorch in predict_batch_udf (best swept batch)",
            None if torch is None else comp["rows_per_s"] / torch["rows_per_s"],
            targets.vs_pytorch_x,
            at_least=True,
            pair=f"{comp['name']} vs {TORCH}",
            note=None if torch is None else f"PyTorch batch {torch['batch_size']}",
        ),
        _row(
            "monthly bill, compressed / fp32, shipped pricing",
            comp["monthly_usd"] / fp32["monthly_usd"],
            targets.monthly_bill_ratio,
            at_least=False,
            pair=pair,
            note=_bill_note(fp32, comp, report),
        ),
    ]
    return rows


def _row(measure, value, target, *, at_least: bool, pair: str, note: str | None = None):
    met = value is not None and (value >= target if at_least else value <= target)
    return {
        "measure": measure,
        "value": None if value is None else round(value, 3),
        "target": f"{'>=' if at_least else '<='} {target:g}",
        "met": met,
        "compared": pair,
        "note": note or ("not measured" if value is None else ""),
    }


def _bill_note(fp32: dict, comp: dict, report: dict) -> str:
    """The two bills (and the workers each is priced on), and the floor the nightly fixed cost
    puts under their ratio: a free model's bill would still hold the fixed cost of the
    smallest cluster it may run on, so no target below that floor can be met at the priced
    volume."""
    note = f"${comp['monthly_usd']:,.2f} vs ${fp32['monthly_usd']:,.2f} a month"
    if comp.get("workers") and fp32.get("workers"):
        note += f" on {comp['workers']} vs {fp32['workers']} workers"
    fixed, nightly = _floor_fixed(comp, report), fp32.get("nightly_usd")
    if fixed is None or not nightly:
        return note
    rows = (report.get("pricing") or {}).get("nightly_rows")
    volume = f" at {rows:,} rows a night" if rows else ""
    return (
        f"{note}; the fixed cost alone (${fixed:,.2f} a night: start-up, driver) is "
        f"{fixed / nightly:.2f} of fp32's bill, the lowest ratio any model reaches{volume}"
    )


def _floor_fixed(comp: dict, report: dict) -> float | None:
    """The fixed cost a free model would pay: the fewest workers the report's pricing allows
    (its window sizes the cluster), else the compressed variant's own fixed cost."""
    from leanscore.bench.pricing import Pricing, cost
    from pydantic import ValidationError

    try:
        pricing = Pricing.model_validate(report.get("pricing") or {})
    except ValidationError:
        return comp.get("fixed_usd_per_night")
    return cost(pricing, rows=10**9, wall_s=1e-9, cores=1)["fixed_usd_per_night"]


def _intervals(fp32: dict, comp: dict, distinct: int | None) -> str:
    def pct(v):
        low, high = v["accuracy_interval"] or (None, None)
        if low is None:
            return f"{100 * v['accuracy']:.2f}%"
        return f"{100 * v['accuracy']:.2f}% [{100 * low:.2f}, {100 * high:.2f}]"

    if fp32["accuracy"] is None or comp["accuracy"] is None:
        return "no labels"
    return (
        f"fp32 {pct(fp32)}, compressed {pct(comp)}; 95% intervals over {distinct or 'all'} "
        "distinct images"
    )


def decode_seconds_per_row(values: list, column: str, spec, *, batch: int = 1024) -> float:
    """The image family's decoding of ``values`` (PNG bytes) alone, one thread, per row."""
    from leanscore.compression.image_inputs import decode_images

    decode_images(values[:batch], column, spec)  # warm
    start = time.perf_counter()
    for i in range(0, len(values), batch):
        decode_images(values[i : i + batch], column, spec)
    return (time.perf_counter() - start) / len(values)


def time_split(variant: dict, decode_s_per_row: float | None) -> dict | None:
    """The variant's core-seconds as reading, decoding, model, converting (the rest of its
    Python) and Spark; decoding carved out of converting for the paths that decode in their
    conversion (leanscore; predict_batch_udf's predict function decodes between its model
    calls, which the breakdown counts as converting too)."""
    times = variant.get("time_breakdown")
    if times is None:
        return None
    decode = 0.0 if decode_s_per_row is None else decode_s_per_row * variant["rows"]
    decode = min(decode, times["convert_s"])
    parts = {
        "read_s": times["read_s"],
        "decode_s": decode,
        "model_s": times["model_s"],
        "convert_s": times["convert_s"] - decode,
        "spark_s": times["spark_s"],
    }
    total = times["core_s"]
    return {
        "core_s": total,
        **{k: round(v, 3) for k, v in parts.items()},
        "shares": {k: round(v / total, 4) if total else 0.0 for k, v in parts.items()},
    }


def targets_markdown(
    rows: list[dict], splits: dict[str, dict | None], decode_rate: float | None
) -> str:
    """The verdict and the time split as a report section."""
    lines = ["", "## The seed's targets on real photos", ""]
    lines += ["| measure | value | target | verdict | compared | note |", "|---" * 6 + "|"]
    for r in rows:
        value = "n/a" if r["value"] is None else f"{r['value']:g}"
        verdict_text = "met" if r["met"] else "NOT met"
        lines.append(
            f"| {r['measure']} | {value} | {r['target']} | {verdict_text} | {r['compared']} | "
            f"{r['note']} |"
        )
    lines += ["", "## Where the time goes (core-seconds)", ""]
    if decode_rate:
        lines.append(f"Decoding measured alone: {decode_rate:,.0f} images/s on one thread.")
        lines.append("")
    lines += ["| variant | read | decode | model | convert | Spark |", "|---" * 6 + "|"]
    for name, split in splits.items():
        if split is None:
            continue
        cells = [
            f"{split[k]:.1f} s ({100 * split['shares'][k]:.0f}%)"
            for k in ("read_s", "decode_s", "model_s", "convert_s", "spark_s")
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def image_section(report: dict, df, artifact, bench_targets, *, rows: int, console) -> dict:
    """Measure decoding alone on ``rows`` of ``df``'s images, judge the targets (the bench's
    own where they overlap, ``bytes_x`` 10) and print them; the section the report keeps."""
    from rich.table import Table

    features = artifact.manifest.features
    values = df.select(features.image_column).limit(rows).toArrow().column(0).to_pylist()
    per_row = decode_seconds_per_row(values, features.image_column, features.image)
    targets = ImageTargets(
        accuracy_drop_points=bench_targets.accuracy_drop_points,
        compression_x=bench_targets.compression_x,
        vs_pytorch_x=bench_targets.end_to_end_x,
        monthly_bill_ratio=bench_targets.monthly_bill_ratio,
    )
    rows_ = verdict(report, targets)
    splits = {v["name"]: time_split(v, per_row) for v in report["variants"]}
    table = Table(title="the seed's targets on real photos")
    for col in ("measure", "value", "target", "verdict", "note"):
        table.add_column(col)
    for r in rows_:
        value = "n/a" if r["value"] is None else f"{r['value']:g}"
        table.add_row(r["measure"], value, r["target"], "met" if r["met"] else "NOT met", r["note"])
    console.print(table)
    return {
        "targets": rows_,
        "decode_images_per_s_one_thread": round(1 / per_row, 1),
        "time_split": splits,
        "markdown": targets_markdown(rows_, splits, 1 / per_row),
    }
