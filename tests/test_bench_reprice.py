"""Re-pricing: a committed report priced again under another pricing file recomputes every
cost figure as the bench did, leaves every measured figure alone, and says so in its stamp."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from leanscore.bench.docs import stamp
from leanscore.bench.pricing import Pricing, load_pricing
from leanscore.bench.reprice import reprice
from leanscore.jobs.cli import app
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "docs" / "reports"
PRICE_KEYS = ("usd_per_million_rows", "nightly_usd", "monthly_usd", "fixed_usd_per_night")
MEASURED = ("rows_per_s", "wall_s", "accuracy", "fidelity", "time_breakdown", "model_bytes")


def _comparisons(report: dict) -> list[dict]:
    return list(report["workloads"].values()) if "workloads" in report else [report]


@pytest.mark.parametrize("name", ["fashion-cnn", "wide-mlp", "headline"])
def test_under_its_own_pricing_a_report_keeps_every_figure(name):
    report = json.loads((REPORTS / f"{name}.json").read_text())
    for original in _comparisons(report):
        own = Pricing.model_validate(original["pricing"])
        again = reprice(original, own, pricing_source="own")
        for before, after in zip(original["variants"], again["variants"], strict=True):
            for key in (*PRICE_KEYS, "savings_pct"):
                assert after[key] == pytest.approx(before[key], rel=1e-4, abs=1e-6), key
        # the stored walls are rounded to the microsecond: dollars agree to the cent's tenth
        bill = again["decomposition"]["monthly_bill"]
        stored = original["decomposition"]["monthly_bill"]
        assert bill == {
            k: pytest.approx(x, abs=1e-4) if isinstance(x, float) else x for k, x in stored.items()
        }
        assert again["decomposition"]["effects"] == original["decomposition"]["effects"]
        if "images" in original:
            pairs = zip(again["images"]["targets"], original["images"]["targets"], strict=True)
            for row, kept in pairs:
                assert {**row, "note": ""} == {**kept, "note": ""}
                # the bill's note now names the cluster each variant is priced on
                assert row["note"].replace(" on 8 vs 8 workers", "") == kept["note"]


def test_a_windowed_pricing_sizes_each_variant_and_changes_nothing_measured():
    report = json.loads((REPORTS / "fashion-cnn.json").read_text())
    pricing = load_pricing(ROOT / "conf" / "pricing-images.yaml")
    assert pricing.window_hours is not None
    priced = reprice(report, pricing, pricing_source="conf/pricing-images.yaml")
    for before, after in zip(report["variants"], priced["variants"], strict=True):
        assert {k: after.get(k) for k in MEASURED} == {k: before.get(k) for k in MEASURED}
        assert 1 <= after["workers"] <= pricing.workers and after["within_window"] is True
    bill = priced["images"]["targets"][4]
    by_name = {v["name"]: v for v in priced["variants"]}
    comp, fp32 = (by_name[n] for n in bill["compared"].split(" vs "))
    assert bill["value"] == pytest.approx(comp["monthly_usd"] / fp32["monthly_usd"], abs=1e-3)
    assert bill["met"] is (bill["value"] <= 0.5)
    assert f"on {comp['workers']} vs {fp32['workers']} workers" in bill["note"]
    assert priced["pricing"]["window_hours"] == pricing.window_hours
    assert "fewest such nodes" in priced["cost_model"]
    assert "Priced " in stamp(priced, "x.json") and "pricing-images.yaml" in stamp(priced, "x.json")
    measured_only = {k: x for k, x in report.items() if k != "repriced"}
    assert "Priced " not in stamp(measured_only, "x.json")


def test_the_cli_writes_the_repriced_report_and_refuses_what_has_no_prices(tmp_path):
    out = tmp_path / "priced.json"
    args = ["report", "reprice", str(REPORTS / "digits-mlp.json"), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--pricing", str(ROOT / "conf" / "pricing.yaml")])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["repriced"]["pricing"].endswith("pricing.yaml")
    nightly = REPORTS / "nightly-user-mlp-10000000.json"
    refused = CliRunner().invoke(
        app, ["report", "reprice", str(nightly), "--pricing", str(ROOT / "conf" / "pricing.yaml")]
    )
    assert refused.exit_code == 1 and "carries no prices" in refused.output
    missing = CliRunner().invoke(app, [*args, "--pricing", str(tmp_path / "none.yaml")])
    assert missing.exit_code == 1 and "none.yaml" in missing.output
