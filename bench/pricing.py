"""Cluster prices and the cost model.

Cost model, in plain words: a worker node costs its instance price per hour plus, on
Databricks, its DBUs per hour times the price of a DBU. Divided by the node's cores, that is a
price per core-second. A scoring run that keeps ``cores`` busy for ``wall_s`` seconds to score
``rows`` rows spends ``cores * wall_s`` core-seconds; per million rows that is
``core_seconds_per_million_rows``, and times the core-second price it is ``usd_per_million_rows``.
The nightly bill is that per-row cost times the nightly row count, plus what every run pays
whatever its speed: the cluster's start-up minutes on every node (workers and driver), and the
driver node for the scoring hours. The monthly bill is the nightly bill times the nights per
month. A faster variant shrinks only the per-row part (and the driver's scoring hours), so
the bill falls less than the speed ratio: the reports state the saving on the bill.
Throughput is assumed to scale with cores, as scoring is embarrassingly parallel.

The cluster's size: ``workers`` nodes, or, where the pricing gives a nightly window
(``window_hours``), the fewest workers, up to ``workers``, whose cores score the night's rows
within it. That is how a team sizes a job cluster for a deadline, and it is where a faster
model also cuts the fixed cost: it needs fewer nodes, each of which pays the start-up minutes.
A variant that cannot finish in the window even on ``workers`` nodes is priced on all of them
and marked ``within_window: false``.
"""

from __future__ import annotations

import math
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
    workers: int = Field(
        gt=0,
        description="worker nodes in the nightly cluster; with window_hours, the most it may have",
    )
    window_hours: float | None = Field(
        default=None,
        gt=0,
        description="hours the nightly scoring may take: each variant is priced on the fewest "
        "workers (up to `workers`) that finish in them; none: always `workers`",
    )
    driver: Instance | None = Field(
        default=None, description="the driver node, billed for start-up and scoring; none: free"
    )
    startup_minutes: float = Field(
        default=0.0, ge=0, description="billed minutes per run before scoring starts (all nodes)"
    )
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
    scoring = usd_per_m * pricing.nightly_rows / 1e6
    workers, within = cluster_workers(pricing, core_s_per_m * pricing.nightly_rows / 1e6)
    hours = core_s_per_m * pricing.nightly_rows / 1e6 / (workers * pricing.instance.cores) / 3600
    startup_h = pricing.startup_minutes / 60.0
    driver_hourly = node_usd_per_hour(pricing.driver) if pricing.driver else 0.0
    fixed = startup_h * (workers * node_usd_per_hour(pricing.instance) + driver_hourly)
    driver_scoring = driver_hourly * hours
    nightly = scoring + fixed + driver_scoring
    return {
        "core_seconds_per_million_rows": core_s_per_m,
        "usd_per_million_rows": usd_per_m,
        "scoring_usd_per_night": scoring,
        "fixed_usd_per_night": fixed,
        "driver_scoring_usd_per_night": driver_scoring,
        "nightly_usd": nightly,
        "monthly_usd": nightly * pricing.nights_per_month,
        "nightly_hours": hours,
        "workers": workers,
        "within_window": within,
    }


def cluster_workers(pricing: Pricing, core_seconds: float) -> tuple[int, bool | None]:
    """The workers a night of ``core_seconds`` is priced on, and whether it finishes within
    the window (None without one): see the module docstring."""
    if pricing.window_hours is None:
        return pricing.workers, None
    node_core_s = pricing.instance.cores * pricing.window_hours * 3600.0
    # a hair of slack so that a night filling the window exactly needs no extra node
    needed = max(1, math.ceil(core_seconds / node_core_s - 1e-9))
    return min(needed, pricing.workers), needed <= pricing.workers


def rounded_cost(figures: dict) -> dict:
    """A ``cost`` result as reports keep it: money and hours to 6 places, the rest as is."""
    return {k: round(x, 6) if isinstance(x, float) else x for k, x in figures.items()}


def node_usd_per_hour(instance: Instance) -> float:
    return instance.usd_per_hour + instance.dbu_per_hour * instance.usd_per_dbu


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
    driver = pricing.driver
    nodes = (
        f"its {pricing.workers} workers"
        if pricing.window_hours is None
        else "every worker it runs on"
    )
    fixed = (
        f" Every run also pays {pricing.startup_minutes:g} start-up minutes on {nodes}"
        + (
            f" and the driver ({driver.name}, ${node_usd_per_hour(driver):.3f}/hour), and the "
            "driver for the scoring hours"
            if driver
            else ""
        )
        + (
            ": the fixed cost per night, the same whatever the variant."
            if pricing.window_hours is None
            else ": the fixed cost per night, which falls with the workers a variant needs."
        )
        if pricing.startup_minutes or driver
        else " Start-up and driver costs are not priced (pricing.startup_minutes, driver)."
    )
    cluster = (
        f"on {pricing.workers} such nodes"
        if pricing.window_hours is None
        else f"within {pricing.window_hours:g} hours on the fewest such nodes, at most "
        f"{pricing.workers}, that finish in time"
    )
    return (
        f"A worker node ({inst.name}, {inst.cores} cores) costs ${inst.usd_per_hour:g}/hour{dbu}, "
        f"that is ${inst.usd_per_core_second * 3600:.4f} per core-hour. A variant that keeps the "
        "benchmark's cores busy for its measured wall time spends cores x wall seconds; per "
        "million rows that is its core-seconds per million rows, and at the core-second price "
        f"its $ per million rows. A nightly job scores {pricing.nightly_rows:,} rows "
        f"{cluster}; its scoring costs $ per million rows x "
        f"{pricing.nightly_rows / 1e6:,g}.{fixed} The month has {pricing.nights_per_month} "
        "nights. Throughput is assumed to scale linearly with cores (scoring is embarrassingly "
        "parallel) and one benchmark core is taken to be worth one cloud vCPU; storage is left "
        "out."
    )
