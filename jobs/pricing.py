"""Cluster prices and the cost model.

Cost model, in plain words: a worker node costs its instance price per hour plus, on
Databricks, its DBUs per hour times the price of a DBU. Divided by the node's cores, that is a
price per core-second. A scoring run that keeps ``cores`` busy for ``wall_s`` seconds to score
``rows`` rows spends ``cores * wall_s`` core-seconds; per million rows that is
``core_seconds_per_million_rows``, and times the core-second price it is ``usd_per_million_rows``.
The nightly bill is that price times the nightly row count; the monthly bill is the nightly
bill times the nights per month. Throughput is assumed to scale with cores, as scoring is
embarrassingly parallel.
"""

from __future__ import annotations

from pathlib import Path

from leanscore.jobs.config import load_config
from pydantic import BaseModel, ConfigDict, Field


class Instance(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    usd_per_hour: float = Field(gt=0, description="instance price per hour, on demand")
    cores: int = Field(gt=0, description="vCPUs that run Spark tasks")
    dbu_per_hour: float = Field(default=0.0, ge=0, description="Databricks DBUs per hour")
    usd_per_dbu: float = Field(default=0.0, ge=0, description="price of one DBU")

    @property
    def usd_per_core_second(self) -> float:
        return (self.usd_per_hour + self.dbu_per_hour * self.usd_per_dbu) / 3600.0 / self.cores


class Pricing(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    instance: Instance
    workers: int = Field(gt=0, description="worker nodes in the nightly cluster")
    nightly_rows: int = Field(gt=0, description="rows scored per nightly run")
    nights_per_month: int = Field(default=30, gt=0, le=31)


def load_pricing(path: str | Path, overrides: list[str] | None = None) -> Pricing:
    return load_config(Pricing, path, overrides)


def cost(pricing: Pricing, *, rows: int, wall_s: float, cores: int) -> dict[str, float]:
    """Cost figures of one measured run; see the module docstring for the model."""
    if rows <= 0 or wall_s <= 0 or cores <= 0:
        raise ValueError(f"rows, wall_s and cores must be positive, got {rows}, {wall_s}, {cores}")
    core_s_per_m = cores * wall_s / rows * 1e6
    usd_per_m = core_s_per_m * pricing.instance.usd_per_core_second
    nightly = usd_per_m * pricing.nightly_rows / 1e6
    cluster_cores = pricing.workers * pricing.instance.cores
    return {
        "core_seconds_per_million_rows": core_s_per_m,
        "usd_per_million_rows": usd_per_m,
        "nightly_usd": nightly,
        "monthly_usd": nightly * pricing.nights_per_month,
        "nightly_hours": core_s_per_m * pricing.nightly_rows / 1e6 / cluster_cores / 3600.0,
    }


def savings(baseline: dict[str, float], variant: dict[str, float]) -> dict[str, float]:
    """What ``variant`` saves against ``baseline`` (both ``cost`` results), per month and %."""
    base = baseline["monthly_usd"]
    saved = base - variant["monthly_usd"]
    return {
        "monthly_savings_usd": saved,
        "savings_pct": 100.0 * saved / base if base > 0 else 0.0,
    }


def cost_model_text(pricing: Pricing) -> str:
    """The cost model in plain words, with this pricing file's numbers in it."""
    inst = pricing.instance
    dbu = (
        f" plus {inst.dbu_per_hour:g} DBU/hour at ${inst.usd_per_dbu:g}/DBU"
        if inst.dbu_per_hour and inst.usd_per_dbu
        else ""
    )
    return (
        f"A worker node ({inst.name}, {inst.cores} cores) costs ${inst.usd_per_hour:g}/hour{dbu}, "
        f"that is ${inst.usd_per_core_second * 3600:.4f} per core-hour. A variant that keeps the "
        "benchmark's cores busy for its measured wall time spends cores x wall seconds; per "
        "million rows that is its core-seconds per million rows, and at the core-second price "
        f"its $ per million rows. A nightly job scores {pricing.nightly_rows:,} rows on "
        f"{pricing.workers} such nodes; its cost is $ per million rows x "
        f"{pricing.nightly_rows / 1e6:,g}, and the month has {pricing.nights_per_month} nights. "
        "Throughput is assumed to scale linearly with cores (scoring is embarrassingly "
        "parallel) and one benchmark core is taken to be worth one cloud vCPU; driver, "
        "start-up and storage costs are left out, as they are the same for every variant."
    )
