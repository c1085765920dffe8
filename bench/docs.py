"""Generated figures: ``docs/benchmarks.md`` and README's headline table, from report JSON files.

A figure typed by hand goes stale the day the code changes. Here every figure of the docs is
printed from a report a bench command wrote, and the reports travel with the docs
(``docs/reports/*.json``), so anyone can check a figure against the report its section names.
``unsourced_figures`` does that check (the docs test runs it): every number in a table of
``docs/benchmarks.md`` must be a value of the report named above the table, at the precision
shown. Each table is stamped with the run's date, the commit it measured, the CPU model, cores
and load average.

    leanscore report docs --report bench-output/report.json \\
        --report bench-output/wide/report.json --headline demo-output/report.json

copies the given reports into ``docs/reports/`` (named by workload), then writes
``docs/benchmarks.md`` from every report there and replaces what lies between README's
``<!-- headline:start -->`` and ``<!-- headline:end -->`` markers with the headline table.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from leanscore.bench.decompose import accuracy_text, decomposition_rows
from leanscore.compression.errors import LeanscoreError
from leanscore.jobs.tables import percent

HEADLINE_START = "<!-- headline:start -->"
HEADLINE_END = "<!-- headline:end -->"
HEADLINE = "headline"
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")

METHOD = """\
How these figures are measured (the bench code is `leanscore.bench`):

- Every variant of a comparison scores the same table in the same Spark session. Each first runs
  once untimed on the very query it is timed on (so predict_batch_udf's model cache and
  leanscore's session cache are warm alike), then all variants run in interleaved rounds, the
  order rotated each round; a figure is the median round. Compare variants within one report:
  the machine is shared and noisy.
- PyTorch in `predict_batch_udf` runs at its best batch, swept on the model alone in interleaved
  rounds; the ONNX model in `predict_batch_udf` runs at the batch of the variant it is paired
  with, so each ratio of "What each part buys" compares two variants that differ in one thing.
- A target is met only by a variant within the quality budget (accuracy drop against the
  baseline, or agreement with it); the variant judged, the fastest and the most accurate are
  named.
- Accuracy intervals are Wilson 95% intervals over the distinct examples behind the rows
  (augmented copies of one image count once); each table says how many.
- Money: core-seconds of the median round times the pricing file's price per core-second,
  projected to the nightly rows, plus each run's fixed costs (`conf/pricing.yaml`).
- Artifacts are rebuilt whenever their build key changes (recipe text, training, data version,
  leanscore version, source model hash).

Each table below names the report JSON (in `docs/reports/`) its figures come from; a test checks
every figure against it. Regenerate with `make bench`, or from the committed reports with
`leanscore report docs`.
"""


class DocsError(LeanscoreError, ValueError):
    """A report or README the docs cannot be generated from; the message says which and why."""


def load_report(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DocsError(f"{path}: not a readable report JSON ({err})") from err


def _workloads(report: dict) -> list[dict]:
    """The demo's comparisons: ``workloads`` as a list, or a mapping of name to report."""
    found = report.get("workloads")
    if isinstance(found, dict):
        return [{**r, "workload": name} for name, r in found.items()]
    return list(found) if isinstance(found, list) else []


def report_kind(report: dict) -> str:
    if _workloads(report):
        return "demo"
    if report.get("kind") == "embedding":
        return "embedding"
    if report.get("kind") == "layouts":
        return "layouts"
    if "x_pytorch" in report:
        return "nightly"
    if "variants" in report and "decomposition" in report:
        return "comparison"
    raise DocsError(
        "not a bench report: no variants/decomposition, embedding, layouts or nightly keys"
    )


# The nightly bench's only workload before its reports named theirs.
NIGHTLY_DEFAULT_WORKLOAD = "wide-mlp"


def report_name(report: dict) -> str:
    """The report's file name in the reports folder: a comparison's workload; a nightly run's
    workload and larger table size (runs of other workloads or sizes are other reports); else
    its kind."""
    kind = report_kind(report)
    if kind == "comparison":
        return report.get("workload") or "comparison"
    if kind == "nightly" and report.get("sizes"):
        workload = report.get("workload") or NIGHTLY_DEFAULT_WORKLOAD
        return f"nightly-{workload}-{max(report['sizes'])}"
    return kind


def collect(sources: list[Path], reports_dir: Path, *, headline: Path | None = None) -> None:
    """Copy each report into ``reports_dir`` under its workload's name (and ``headline``'s as
    ``headline.json``)."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    for source in sources:
        try:
            name = report_name(load_report(source))
        except DocsError as err:
            raise DocsError(f"{source}: {err}") from err
        shutil.copyfile(source, reports_dir / f"{name}.json")
    if headline is not None:
        if report_kind(load_report(headline)) not in ("comparison", "demo"):
            raise DocsError(f"--headline {headline}: not a comparison report (bench or demo)")
        shutil.copyfile(headline, reports_dir / f"{HEADLINE}.json")


def _environment(report: dict) -> dict:
    if _workloads(report) and not report.get("environment"):
        report = {**_workloads(report)[0], **report}  # the demo's run: its first workload's
    env = report.get("environment") or {}
    return {
        "run_at": report.get("run_at"),
        "commit": env.get("commit", report.get("commit")),
        "cpu_model": env.get("cpu_model", report.get("cpu_model")),
        "cores": report.get("cores", env.get("spark_cores")),
        "machine_cores": env.get("machine_cores", report.get("cpu_count")),
        "load": env.get("load_average", report.get("load_average")),
    }


def stamp(report: dict, source: str) -> str:
    """Date, commit, CPU model, cores and load of the run; fails where the report lacks one."""
    env = _environment(report)
    missing = [k for k in ("run_at", "cpu_model", "load") if not env[k]]
    if missing:
        raise DocsError(
            f"{source}: the report has no {', '.join(missing)}; write it with the bench's "
            "environment (leanscore.bench.metrics.environment) and run_at"
        )
    load = ", ".join(f"{x:.2f}" for x in env["load"])
    cores = f"{env['cores']} cores" if env["cores"] else "cores n/a"
    repriced = report.get("repriced")
    priced = (
        f" Priced {repriced['at'][:10]} at commit `{repriced['commit'] or 'unknown'}` under "
        f"`{Path(repriced['pricing']).name}` (`leanscore report reprice`)."
        if repriced
        else ""
    )
    return (
        f"_Measured {env['run_at'][:10]} at commit `{env['commit'] or 'unknown'}` on "
        f"{env['cpu_model']}, {cores} of {env['machine_cores']}, load average {load}.{priced} "
        f"Source: `{source}`._"
    )


def _table(
    head: list[str], rows: list[list[str]], right_from: int = 1, *, right: set[int] | None = None
) -> list[str]:
    """A Markdown table: columns from ``right_from`` on (or those in ``right``) right-aligned."""
    right = set(range(right_from, len(head))) if right is None else right
    align = ["---:" if i in right else "---" for i in range(len(head))]
    return [
        "| " + " | ".join(head) + " |",
        "| " + " | ".join(align) + " |",
        *["| " + " | ".join(r) + " |" for r in rows],
    ]


def _comparisons(report: dict) -> list[dict]:
    return _workloads(report) if report_kind(report) == "demo" else [report]


def headline_lines(report: dict, source: str) -> list[str]:
    """The workload comparison (a bench report, or the demo's report of several workloads):
    per workload, each leanscore variant's rows/s, speed-up against that workload's baseline,
    accuracy with its interval and monthly bill."""
    rows, notes = [], []
    for c in _comparisons(report):
        base = c["variants"][0]["name"]
        n = c.get("distinct_examples") or c["rows"]
        name = c.get("workload") or "comparison"
        rows += [
            [
                name,
                f"`{v['name']}`",
                f"{v['rows_per_s']:,.0f}",
                f"{v['speedup']:.2f}x `{base}`" if v["name"] != base else "baseline",
                accuracy_text(v),
                f"${v['monthly_usd']:,.2f}",
            ]
            for v in c["variants"]
            if v["path"] == "leanscore" or v["name"] == base
        ]
        notes.append(
            f"{name}: {c['rows']:,} rows on {c['cores']} cores; accuracy over {n:,} distinct "
            "examples."
        )
    head = ["workload", "variant", "rows/s", "speed-up vs", "accuracy [95%]", "$ / month"]
    return [stamp(report, source), "", *_table(head, rows, 2), "", *notes]


def comparison_lines(report: dict, source: str) -> list[str]:
    rows = []
    for v in report["variants"]:
        fid = v.get("fidelity") or {}
        rows.append(
            [
                f"`{v['name']}`",
                "" if v.get("batch_size") is None else f"{v['batch_size']:,}",
                f"{v['rows_per_s']:,.0f}",
                f"{v['speedup']:.2f}x",
                f"{v['usd_per_million_rows']:.5f}",
                f"{v['monthly_usd']:,.2f}",
                accuracy_text(v),
                percent(fid.get("agreement")),
            ]
        )
    n = report.get("distinct_examples") or report["rows"]
    head = ["variant", "batch", "rows/s", "speed-up", "$ / M rows", "$ / month"]
    head += ["accuracy [95%]", "agreement"]
    decomposition = [
        [r[0], r[1], f"`{r[2]}`", f"`{r[3]}`", r[4], r[5]]
        for r in decomposition_rows(report["decomposition"])
    ]
    return [
        f"### {report.get('workload') or 'comparison'}",
        "",
        stamp(report, source),
        "",
        *_table(head, rows),
        "",
        f"{report['rows']:,} rows on {report['cores']} cores, {report['repeats']} rounds; "
        f"accuracy over {n:,} distinct examples; speed-up against `{report['baseline']}`.",
        "",
        *_table(
            ["effect", "ratio", "variant", "against", "target", "verdict"],
            decomposition,
            right={1},
        ),
        *image_target_lines(report),
    ]


def image_target_lines(report: dict) -> list[str]:
    """The images workload's own targets (``bench/image_targets.py``), as its report judged
    them; nothing for other workloads."""
    section = report.get("images")
    if not section:
        return []
    rows = [
        [
            r["measure"],
            "n/a" if r["value"] is None else f"{r['value']:g}",
            r["target"],
            "met" if r["met"] else "NOT met",
            f"`{r['compared']}`",
            r["note"],
        ]
        for r in section["targets"]
    ]
    head = ["target on real photos", "value", "target", "verdict", "compared", "note"]
    return ["", *_table(head, rows, right={1})]


def embedding_lines(report: dict, source: str) -> list[str]:
    rows = [
        [
            f"`{e['name']}`",
            f"{e['sentences_per_s']:,.1f}",
            "n/a" if e["x_vs_fp32_onnx"] is None else f"{e['x_vs_fp32_onnx']:.2f}x",
            "n/a" if e["x_vs_pytorch"] is None else f"{e['x_vs_pytorch']:.2f}x",
            f"{e['fidelity']['cosine_mean']:.4f}",
            f"{e['fidelity']['cosine_p1']:.4f}",
            "n/a" if e["model_bytes"] is None else f"{e['model_bytes']:,}",
            str(e["rounds"]),
        ]
        for e in report["variants"]
    ]
    t = report["targets"]
    verdict = "met" if t.get("met") else "NOT met"
    return [
        "### text embedding (MiniLM)",
        "",
        stamp(report, source),
        "",
        *_table(
            ["variant", "sentences/s", "x fp32 ONNX", "x PyTorch", "cosine mean", "cosine p1"]
            + ["model bytes", "rounds"],
            rows,
        ),
        "",
        f"{report['input']['rows']:,} sentences; targets for `{t.get('variant')}`: {verdict}.",
    ]


def nightly_lines(report: dict, source: str) -> list[str]:
    rows = []
    for r in sorted(report["results"], key=lambda r: (r["rows"], r["variant"])):
        ratio = report["x_pytorch"][str(r["rows"])] if r["variant"] == "leanscore" else None
        rows.append(
            [
                r["variant"],
                f"{r['rows']:,}",
                f"{r['wall_s']:.2f}",
                f"{r['rows_per_s']:,.0f}",
                "" if ratio is None else f"{ratio:.2f}x",
            ]
        )
    sizes = " and ".join(f"{n:,}" for n in report.get("sizes", []))
    return [
        "### the nightly job as a process"
        + f", {report.get('workload') or NIGHTLY_DEFAULT_WORKLOAD}"
        + (f", {sizes} rows" if sizes else ""),
        "",
        stamp(report, source),
        "",
        *_table(["variant", "rows", "process wall s", "rows/s", "leanscore x PyTorch"], rows),
        "",
        f"PyTorch in predict_batch_udf at batches of {report.get('torch_batch_size', 'n/a')}; "
        f"each process run {report.get('repeats', 1)} times, median shown.",
        *fixed_cost_lines(report),
        *limit_lines(report),
        *ceiling_lines(report),
        *nightly_target_lines(report),
    ]


def fixed_cost_lines(report: dict) -> list[str]:
    """Each job's fixed cost and cost per row, from the line through its two sizes: what a job
    pays every night whatever the table, and what grows with it."""
    wall = report.get("fixed_and_per_row") or {}
    cpu = report.get("cpu_fixed_and_per_row") or {}
    if not wall:
        return []
    rows = [
        [
            variant,
            f"{line['fixed_s']:.2f}",
            f"{line['per_million_rows_s']:.2f}",
            *(
                [
                    f"{cpu[variant]['fixed_cpu_s']:.2f}",
                    f"{cpu[variant]['per_million_rows_cpu_s']:.2f}",
                ]
                if variant in cpu
                else ["", ""]
            ),
        ]
        for variant, line in wall.items()
    ]
    header = ["variant", "fixed s", "s per million rows", "fixed CPU s", "CPU s per million rows"]
    return [
        "",
        "From the two sizes, time = fixed + rows x per-row (CPU: the process tree's):",
        "",
        *_table(header, rows),
        *process_cpu_lines(report),
    ]


def process_cpu_lines(report: dict) -> list[str]:
    """The same CPU line split by process: where each job's per-row CPU goes (the driver, the
    JVM that reads, converts and writes, the Python workers that run the model)."""
    split = report.get("cpu_by_process") or {}
    rows = [
        [
            variant,
            kind.replace("_", " "),
            f"{line['fixed_cpu_s']:.2f}",
            f"{line['per_million_rows_cpu_s']:.2f}",
        ]
        for variant, kinds in split.items()
        for kind, line in kinds.items()
    ]
    if not rows:
        return []
    header = ["variant", "process", "fixed CPU s", "CPU s per million rows"]
    return [
        "",
        "The CPU split by process (Linux /proc, sampled while each job runs):",
        "",
        *_table(header, rows),
    ]


def limit_lines(report: dict) -> list[str]:
    """leanscore's score+write phase against its parts alone, where the bench measured them."""
    if not report.get("limit"):
        return []
    rows = [
        [
            f"{int(size):,}",
            "" if p["score_write_s"] is None else f"{p['score_write_s']:.2f}",
            f"{p['read_s']:.2f}",
            f"{p['model_s']:.2f}",
            f"{p['write_s']:.2f}",
            f"{p['limit_s']:.2f}",
            "" if p["x"] is None else f"{p['x']:.2f}x",
        ]
        for size, p in report["limit"].items()
    ]
    header = ["rows", "score+write s", "read alone s", "model alone s", "write alone s"]
    return [
        "",
        f"leanscore's limit: {report.get('limit_how') or 'each part alone'}.",
        "",
        *_table([*header, "limit s (sum)", "score+write / limit"], rows, right_from=0),
    ]


def nightly_target_lines(report: dict) -> list[str]:
    """The nightly bench's targets as its report judged them."""
    rows = [
        [t["target"], f"{t['value']:.2f}x", t["want"], "yes" if t["met"] else "NO"]
        for t in report.get("targets") or []
    ]
    if not rows:
        return []
    return ["", *_table(["target", "measured", "want", "met"], rows, right={1})]


def ceiling_lines(report: dict) -> list[str]:
    """How far the nightly targets can go on this machine (the report's ``ceilings``, made by
    ``nightly.ceilings``)."""
    reach = report.get("ceilings") or {}
    if not reach.get("x_with_no_per_row_cost"):
        return []
    at = " and ".join(
        f"{x:.2f}x at {int(n):,} rows" for n, x in reach["x_with_no_per_row_cost"].items()
    )
    text = (
        "What these ratios can reach here: with no cost per row at all, leanscore's job would "
        f"run at most {at} as fast as PyTorch's (PyTorch's whole run over leanscore's fixed "
        "cost)"
    )
    if "per_row_x_at_limit" in reach:
        text += (
            "; with score+write at its limit, leanscore's cost per row would be about "
            f"{reach['per_row_x_at_limit']:.2f}x lower than PyTorch's (PyTorch's slope over "
            "the slope of the limit's sum, a reference rather than a bound: in the job the "
            "parts overlap, so it can pass it)"
        )
    return ["", text + "."]


def layouts_lines(report: dict, source: str) -> list[str]:
    from leanscore.bench.layouts import HEADER, summary_line, table_rows

    return [
        "### feature layouts",
        "",
        stamp(report, source),
        "",
        *_table(HEADER, table_rows(report), right={1, 2, 3, 4}),
        "",
        summary_line(report),
    ]


RENDER = {
    "comparison": comparison_lines,
    "embedding": embedding_lines,
    "nightly": nightly_lines,
    "layouts": layouts_lines,
}
TITLES = {
    "comparison": "Tabular and image workloads: every variant on one table",
    "embedding": "Text embedding",
    "nightly": "The nightly job as a process",
    "layouts": "Feature layouts: what the table's storage costs",
}


def _reports(reports_dir: Path) -> Iterator[tuple[Path, dict]]:
    for path in sorted(reports_dir.glob("*.json")):
        yield path, load_report(path)


def benchmarks_markdown(reports_dir: Path, *, relative_to: Path) -> str:
    """The page: the headline first, then one section per kind of report (``TITLES`` order)
    holding every report of that kind."""
    lines = ["# Benchmarks", "", "<!-- generated by `leanscore report docs`: do not edit -->", ""]
    lines += [METHOD]
    sections: dict[str, list[list[str]]] = {}
    for path, report in _reports(reports_dir):
        source = os.path.relpath(path.resolve(), relative_to.resolve())
        if path.stem == HEADLINE:
            kind, body = "headline", headline_lines(report, source)
        else:
            kind = report_kind(report)
            if kind not in RENDER:
                raise DocsError(
                    f"{path}: a {kind} report is read as README's headline (--headline), not "
                    "as a section of the page; remove it from the reports folder"
                )
            body = RENDER[kind](report, source)
        sections.setdefault(kind, []).append(body)
    for kind, title in {"headline": "Headline: the workload comparison", **TITLES}.items():
        if kind in sections:
            lines += [f"## {title}", ""]
            for body in sections[kind]:
                lines += [*body, ""]
    return "\n".join(lines)


def replace_headline(readme: Path, block: str) -> None:
    text = readme.read_text()
    start, end = text.find(HEADLINE_START), text.find(HEADLINE_END)
    if start < 0 or end < 0 or end < start:
        raise DocsError(
            f"{readme}: no '{HEADLINE_START}' ... '{HEADLINE_END}' markers (in that order); add "
            "them where the headline table belongs"
        )
    before, after = text[: start + len(HEADLINE_START)], text[end:]
    readme.write_text(f"{before}\n{block}\n{after}")


def write_docs(reports_dir: Path, out: Path, *, readme: Path | None, root: Path) -> list[str]:
    """Write ``out`` (and README's headline where a headline report is there); return the
    figures no report holds (empty when every figure is sourced)."""
    text = benchmarks_markdown(reports_dir, relative_to=root)
    problems = unsourced_figures(text, root)
    if problems:
        raise DocsError("figures without a source report: " + "; ".join(problems))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    headline = reports_dir / f"{HEADLINE}.json"
    if readme is not None and headline.is_file():
        source = os.path.relpath(headline.resolve(), root.resolve())
        block = "\n".join(headline_lines(load_report(headline), source))
        replace_headline(readme, block)
    return problems


def _values(node, numbers: list[float], texts: list[str]) -> None:
    if isinstance(node, bool) or node is None:
        return
    if isinstance(node, int | float):
        numbers.append(float(node))
    elif isinstance(node, str):
        texts.append(node)
    elif isinstance(node, dict):
        for v in node.values():
            _values(v, numbers, texts)
    elif isinstance(node, list):
        for v in node:
            _values(v, numbers, texts)


def _sourced(token: str, numbers: list[float], texts: list[str]) -> bool:
    """``token`` as printed (``1,234``, ``97.12``, ``0.00321``) is a report value rounded to
    the shown decimals, or that value as a percentage, or appears in one of its texts."""
    decimals = len(token.split(".")[1]) if "." in token else 0
    x = float(token.replace(",", ""))
    tolerance = 0.5 * 10**-decimals + 1e-12
    for n in numbers:
        if abs(n - x) <= tolerance or abs(100 * n - x) <= tolerance:
            return True
    return any(token in t for t in texts)


def unsourced_figures(markdown: str, root: Path) -> list[str]:
    """Every number in the tables of ``markdown`` that the report named above its table does
    not hold (the first column, a variant's name, is not a figure)."""
    problems, report, numbers, texts = [], None, [], []
    previous = ""
    for line in markdown.splitlines():
        header = line.startswith("| ") and not previous.startswith("| ")
        previous = line
        match = re.search(r"Source: `([^`]+)`", line)
        if match:
            report = root / match.group(1)
            numbers, texts = [], []
            _values(load_report(report), numbers, texts)
            continue
        if not line.startswith("| ") or header or set(line) <= set("|-: "):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")][1:]
        for cell in cells:
            for token in _NUMBER.findall(cell.replace("`", "")):
                if report is None:
                    problems.append(f"{token} in a table before any 'Source:' line")
                elif not _sourced(token, numbers, texts):
                    problems.append(f"{token} (in '{cell}') is not in {report.name}")
    return problems
