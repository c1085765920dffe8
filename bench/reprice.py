"""Re-pricing a comparison report: the same measured runs under another pricing file.

A bench measures speed once; prices, the nightly volume and the cluster's size are the
analyst's to change. Re-pricing recomputes every figure that follows from the pricing (each
variant's cost, its saving against the baseline, the monthly-bill effect and, for the images
workload, its bill target) from the report's own rows, median walls and cores, exactly as the
bench computed them, and stamps the report with when, at which commit and from which file.
Nothing measured changes: rows/s, accuracy, fidelity and time shares stay as the run wrote them.
"""

from __future__ import annotations

import copy
import datetime as dt

from leanscore.bench.decompose import bill_verdict
from leanscore.bench.docs import report_kind
from leanscore.bench.metrics import source_commit
from leanscore.bench.pricing import Pricing, cost, cost_model_text, rounded_cost, savings


def reprice(report: dict, pricing: Pricing, *, pricing_source: str) -> dict:
    """A copy of ``report`` (a bench comparison, or the demo's report of several) priced
    under ``pricing``, stamped ``repriced``; other reports carry no prices and are refused."""
    kind = report_kind(report)
    if kind not in ("comparison", "demo"):
        raise ValueError(f"a {kind} report carries no prices: re-price a bench or demo report")
    priced = copy.deepcopy(report)
    if kind == "demo":
        for comparison in priced["workloads"].values():
            _reprice_comparison(comparison, pricing)
    else:
        _reprice_comparison(priced, pricing)
    priced["repriced"] = {
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": source_commit(),
        "pricing": pricing_source,
    }
    return priced


def _reprice_comparison(report: dict, pricing: Pricing) -> None:
    variants = report["variants"]
    cores = report["cores"]
    for v in variants:
        v.update(rounded_cost(cost(pricing, rows=v["rows"], wall_s=v["wall_s"], cores=cores)))
    for v in variants:
        v.update(rounded_cost(savings(variants[0], v)))
    bill = (report.get("decomposition") or {}).get("monthly_bill")
    if bill:
        by_name = {v["name"]: v for v in variants}
        ours, reference = by_name[bill["variant"]], by_name[bill["reference"]]
        bill.update(bill_verdict(ours, reference, bill["target"], bill["within_budget"]))
    report["pricing"] = pricing.model_dump()
    report["cost_model"] = cost_model_text(pricing)
    if "images" in report:
        _reprice_images(report)


def _reprice_images(report: dict) -> None:
    from leanscore.bench.image_targets import stated_targets, targets_markdown, verdict

    section = report["images"]
    section["targets"] = verdict(report, stated_targets(section["targets"]))
    section["markdown"] = targets_markdown(
        section["targets"], section["time_split"], section["decode_images_per_s_one_thread"]
    )
