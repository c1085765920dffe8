"""What each part buys: one ratio per effect, between two variants that differ in one thing.

A headline speed-up against PyTorch in ``predict_batch_udf`` multiplies several effects. The
bench runs enough variants that each is measured on its own, side by side, on the same table:

| effect | faster variant | against |
| --- | --- | --- |
| runtime | ONNX fp32 in ``predict_batch_udf`` | PyTorch in ``predict_batch_udf`` |
| engine | leanscore's Arrow path, Spark's reader | ONNX fp32 in ``predict_batch_udf`` |
| reader | leanscore on the scan engine | leanscore on Spark's reader |
| compression | best compressed model | fp32 model, same engine and reader |
| end to end | best leanscore variant | PyTorch in ``predict_batch_udf`` |

The two ``predict_batch_udf`` pairs must also share a batch size: the runtime pair runs both
models at PyTorch's best batch, the engine pair runs the ONNX model at leanscore's batch. Where
those batches differ the bench runs the ONNX model in ``predict_batch_udf`` at both, and each
pair takes the one matching its partner's batch.

Each effect is checked against its own target (``BenchTargets``); the cost target is stated on
the monthly bill (fixed costs per nightly run included, ``pricing``), which a speed ratio alone
does not give once a run has fixed costs.

A speed target is met only by a variant within the quality budget: a model that is fast because
it is wrong must not turn a target green. The compressed, end-to-end and bill targets judge the
fastest candidate *within* budget (``within_budget``: accuracy drop against the baseline where
labels exist, else agreement or cosine with it), and each row also names the fastest and the
most accurate candidate, so a reader sees what was left out and why.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

ONNX = "onnx-fp32"
TORCH = "torch-fp32"


class BenchTargets(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    compression_x: float = Field(
        default=4.0, gt=0, description="compressed vs fp32 rows/s, same engine and reader"
    )
    accuracy_drop_points: float = Field(
        default=1.0, ge=0, description="largest accuracy loss of the compressed model, points"
    )
    engine_x: float = Field(
        default=1.5, gt=0, description="leanscore vs predict_batch_udf, Spark's reader, same ONNX"
    )
    end_to_end_x: float = Field(
        default=8.0, gt=0, description="best leanscore vs PyTorch in predict_batch_udf"
    )
    monthly_bill_ratio: float = Field(
        default=0.25, gt=0, description="best leanscore's monthly bill / the baseline's"
    )
    min_agreement: float = Field(
        default=0.99,
        ge=0,
        le=1,
        description="without labels: the least share of rows whose class agrees with the baseline",
    )
    min_cosine: float = Field(
        default=0.99, ge=-1, le=1, description="embeddings: the least mean cosine to the baseline"
    )


EFFECTS = {
    "runtime": "ONNX Runtime instead of PyTorch, both in predict_batch_udf",
    "engine": "leanscore's Arrow path instead of predict_batch_udf, Spark's reader, same ONNX",
    "reader": "the scan engine instead of Spark's reader, leanscore, same model",
    "compression": "the compressed model instead of fp32, same engine and reader",
    "end_to_end": "the best leanscore variant instead of PyTorch in predict_batch_udf",
}


def within_budget(v: dict, baseline: dict, targets: BenchTargets) -> tuple[bool, str]:
    """Whether ``v`` keeps the quality the targets allow, and the figure that decided it.
    Accuracy against the baseline's where both were measured on labels; else agreement of
    classes, or mean cosine of embeddings, with the baseline. Nothing measured: not within
    (a speed target cannot vouch for a model whose quality nobody checked)."""
    acc, base_acc = v.get("accuracy"), baseline.get("accuracy")
    if acc is not None and base_acc is not None:
        drop = 100 * (base_acc - acc)
        return drop <= targets.accuracy_drop_points + 1e-9, (
            f"accuracy {drop:+.2f} pt vs {baseline['name']} (budget "
            f"{targets.accuracy_drop_points:g} pt)"
        )
    fid = v.get("fidelity") or {}
    if fid.get("agreement") is not None:
        a = fid["agreement"]
        return a >= targets.min_agreement, (
            f"agreement {100 * a:.2f}% (budget >= {100 * targets.min_agreement:g}%)"
        )
    if fid.get("cosine_mean") is not None:
        c = fid["cosine_mean"]
        return c >= targets.min_cosine, f"cosine {c:.4f} (budget >= {targets.min_cosine:g})"
    return False, "quality not measured"


def _quality_key(v: dict) -> float:
    """Higher is better: accuracy where measured, else agreement or cosine with the baseline."""
    fid = v.get("fidelity") or {}
    for x in (v.get("accuracy"), fid.get("agreement"), fid.get("cosine_mean")):
        if x is not None:
            return x
    return float("-inf")


def _judged(pool: list[dict], baseline: dict, targets: BenchTargets) -> tuple[dict | None, dict]:
    """The fastest of ``pool`` within budget (or, where none is, the fastest, which then
    fails), and who else stood: the fastest and the most accurate candidate."""
    if not pool:
        return None, {}
    fastest = max(pool, key=lambda v: v["rows_per_s"])
    most_accurate = max(pool, key=_quality_key)
    good = [v for v in pool if within_budget(v, baseline, targets)[0]]
    chosen = max(good, key=lambda v: v["rows_per_s"]) if good else fastest
    return chosen, {"fastest": fastest["name"], "most_accurate": most_accurate["name"]}


def _find(variants: list[dict], **want) -> dict | None:
    for v in variants:
        if all(v.get(k) == x for k, x in want.items()):
            return v
    return None


def _onnx_pbu_at_batch_of(variants: list[dict], partner: dict | None) -> dict | None:
    """The ONNX model in predict_batch_udf at ``partner``'s batch size; None where the run has
    it only at another batch (that pair would differ in two things). Variants without a
    ``batch_size`` (older runs) pair as found."""
    if partner is None:
        return None
    batch = partner.get("batch_size")
    onnx_pbus = [
        v
        for v in variants
        if v["model"] == ONNX and v["path"] == "predict_batch_udf" and v["engine"] == "spark"
    ]
    if batch is None:
        return onnx_pbus[0] if onnx_pbus else None
    return next(
        (v for v in onnx_pbus if v.get("batch_size") in (batch, None)),
        None,
    )


def pairs(
    variants: list[dict], targets: BenchTargets | None = None
) -> dict[str, tuple[dict, dict] | None]:
    """effect -> (faster candidate, reference): the two variants that differ in that effect
    only; None where the run lacks one of them. Variants carry ``model``, ``path``
    (``predict_batch_udf`` or ``leanscore``), ``engine`` (the reader: ``spark`` or ``scan``),
    ``compressed``, ``rows_per_s`` and ``batch_size`` (rows per model call): the runtime pair
    takes the ONNX ``predict_batch_udf`` variant at PyTorch's batch, the engine pair the one at
    leanscore's. The compression and end-to-end pairs take the fastest candidate within the
    quality budget of ``targets`` (``within_budget``; the first variant is the baseline)."""
    targets = targets or BenchTargets()
    baseline = variants[0] if variants else {}
    torch_pbu = _find(variants, model=TORCH, path="predict_batch_udf", engine="spark")
    onnx_spark = _find(variants, model=ONNX, path="leanscore", engine="spark")
    onnx_pbu_runtime = _onnx_pbu_at_batch_of(variants, torch_pbu)
    onnx_pbu_engine = _onnx_pbu_at_batch_of(variants, onnx_spark)
    onnx_scan = _find(variants, model=ONNX, path="leanscore", engine="scan")
    compressed = [v for v in variants if v["compressed"] and v["path"] == "leanscore"]
    best_compressed, _ = _judged(compressed, baseline, targets)
    same_reader = (
        _find(variants, model=ONNX, path="leanscore", engine=best_compressed["engine"])
        if best_compressed
        else None
    )
    ours = [v for v in variants if v["path"] == "leanscore"]
    best, _ = _judged(ours, baseline, targets)

    def pair(a: dict | None, b: dict | None) -> tuple[dict, dict] | None:
        return (a, b) if a is not None and b is not None else None

    return {
        "runtime": pair(onnx_pbu_runtime, torch_pbu),
        "engine": pair(onnx_spark, onnx_pbu_engine),
        "reader": pair(onnx_scan, onnx_spark),
        "compression": pair(best_compressed, same_reader),
        "end_to_end": pair(best, torch_pbu),
    }


def accuracy_text(v: dict) -> str:
    """A variant's accuracy with its 95% interval, as the reports print it."""
    if v.get("accuracy") is None:
        return "n/a"
    low, high = v.get("accuracy_interval") or (None, None)
    interval = "" if low is None else f" [{100 * low:.1f}, {100 * high:.1f}]"
    return f"{100 * v['accuracy']:.2f}%{interval}"


def decompose(variants: list[dict], targets: BenchTargets) -> dict:
    """Each effect's ratio (rows/s of the faster candidate over its reference), its target
    where the bench states one, and whether it is met: the ratio reaches the target *and* the
    variant judged is within the quality budget (``within_budget``). Plus the monthly-bill
    target, judged on the same variant as the end-to-end ratio."""
    goals = {
        "engine": targets.engine_x,
        "compression": targets.compression_x,
        "end_to_end": targets.end_to_end_x,
    }
    baseline = variants[0]
    pools = {
        "compression": [v for v in variants if v["compressed"] and v["path"] == "leanscore"],
        "end_to_end": [v for v in variants if v["path"] == "leanscore"],
    }
    effects = {}
    for effect, found in pairs(variants, targets).items():
        effects[effect] = _effect_row(effect, found, goals.get(effect), baseline, targets)
        if effect in pools:
            effects[effect].update(_judged(pools[effect], baseline, targets)[1])
    # the product of the parts against the end-to-end ratio measured directly
    parts = [effects[e]["ratio"] for e in ("runtime", "engine", "reader", "compression")]
    product = math.prod(parts) if all(p is not None for p in parts) else None
    return {
        "effects": effects,
        "product_of_parts": None if product is None else round(product, 3),
        "monthly_bill": _bill(variants, baseline, targets),
    }


def _effect_row(
    effect: str, found: tuple[dict, dict] | None, goal: float | None, baseline: dict, targets
) -> dict:
    row = {"what": EFFECTS[effect], "variant": None, "reference": None, "ratio": None}
    within = None
    if found is not None:
        a, b = found
        within, why = within_budget(a, baseline, targets)
        row.update(
            variant=a["name"],
            reference=b["name"],
            ratio=round(a["rows_per_s"] / b["rows_per_s"], 3),
            variant_batch=a.get("batch_size"),
            reference_batch=b.get("batch_size"),
            within_budget=within,
            budget=why,
        )
        if effect == "compression":
            drop = (
                None
                if a.get("accuracy") is None or b.get("accuracy") is None
                else round(100 * (b["accuracy"] - a["accuracy"]), 3)
            )
            row["accuracy_drop_points"] = drop
            row["accuracy_drop_target"] = targets.accuracy_drop_points
            if drop is not None and drop > targets.accuracy_drop_points + 1e-9:
                within = row["within_budget"] = False  # also against its own fp32 partner
    row["target"] = goal
    row["met"] = (
        None if goal is None else bool(row["ratio"] is not None and row["ratio"] >= goal and within)
    )
    return row


def _bill(variants: list[dict], baseline: dict, targets: BenchTargets) -> dict | None:
    ours = [v for v in variants if v["path"] == "leanscore"]
    best, who = _judged(ours, baseline, targets)
    if best is None or not baseline.get("monthly_usd"):
        return None
    within, why = within_budget(best, baseline, targets)
    return {
        "variant": best["name"],
        "reference": baseline["name"],
        "target": targets.monthly_bill_ratio,
        "within_budget": within,
        "budget": why,
        **who,
        **bill_verdict(best, baseline, targets.monthly_bill_ratio, within),
    }


def bill_verdict(variant: dict, reference: dict, target: float, within: bool) -> dict:
    """The bill effect's priced figures: both monthly bills, their ratio, and met (the ratio
    reaches ``target`` and the variant is ``within`` its quality budget). Re-pricing a report
    recomputes these alone."""
    ratio = variant["monthly_usd"] / reference["monthly_usd"]
    return {
        "monthly_usd": variant["monthly_usd"],
        "reference_monthly_usd": reference["monthly_usd"],
        "ratio": round(ratio, 4),
        "met": bool(ratio <= target and within),
    }


def _with_batch(name: str | None, batch: int | None) -> str:
    if name is None:
        return "n/a"
    return name if batch is None else f"{name} (batch {batch:,})"


def decomposition_rows(decomposition: dict) -> list[list[str]]:
    """The decomposition as text rows: effect, ratio, variant, reference, target, met."""
    rows = []
    for effect, row in decomposition["effects"].items():
        ratio = "n/a" if row["ratio"] is None else f"{row['ratio']:.2f}x"
        target = "" if row["target"] is None else f">= {row['target']:g}x"
        if row.get("accuracy_drop_points") is not None:
            target += (
                f", <= {row['accuracy_drop_target']:g} pt ({row['accuracy_drop_points']:+.2f})"
            )
        met = "" if row["met"] is None else ("met" if row["met"] else "NOT met")
        if row.get("within_budget") is False:
            met += f" ({row['budget']})"
        rows.append(
            [
                effect,
                ratio,
                _with_batch(row["variant"], row.get("variant_batch")),
                _with_batch(row["reference"], row.get("reference_batch")),
                target,
                met,
            ]
        )
    bill = decomposition.get("monthly_bill")
    if bill:
        rows.append(
            [
                "monthly bill",
                f"{bill['ratio']:.3f}",
                f"{bill['variant']} ${bill['monthly_usd']:,.0f}",
                f"{bill['reference']} ${bill['reference_monthly_usd']:,.0f}",
                f"<= {bill['target']:g}",
                ("met" if bill["met"] else "NOT met")
                + ("" if bill.get("within_budget", True) else f" ({bill['budget']})"),
            ]
        )
    return rows


def candidates_lines(decomposition: dict) -> list[str]:
    """Who a judged target chose among: the fastest and the most accurate candidate, where
    either is not the variant judged (the fastest may be over the quality budget)."""
    lines = []
    for effect, row in decomposition["effects"].items():
        if "fastest" not in row or row["variant"] is None:
            continue
        lines.append(
            f"{effect.replace('_', ' ')}: judged `{row['variant']}` ({row['budget']}); "
            f"fastest `{row['fastest']}`, most accurate `{row['most_accurate']}`."
        )
    return lines
