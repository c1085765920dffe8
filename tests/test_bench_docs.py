"""docs/benchmarks.md is generated from the committed report JSONs and every figure in it is a
value of the report its table names; a figure that is not fails the check. README's headline
table replaces only what lies between its markers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from leanscore.bench.docs import (
    HEADLINE_END,
    HEADLINE_START,
    DocsError,
    benchmarks_markdown,
    replace_headline,
    stamp,
    unsourced_figures,
)

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
REPORTS = ROOT / "docs" / "reports"


def test_benchmarks_page_is_what_the_committed_reports_generate():
    assert sorted(p.name for p in REPORTS.glob("*.json")), "no committed reports"
    assert DOCS.read_text() == benchmarks_markdown(REPORTS, relative_to=ROOT)


def test_each_kind_of_report_has_one_section_after_the_headline():
    headings = [line for line in DOCS.read_text().splitlines() if line.startswith("## ")]
    assert headings[0] == "## Headline: the workload comparison"
    assert len(headings) == len(set(headings))  # a kind's reports sit under one heading
    tabular = headings.index("## Tabular and image workloads: every variant on one table")
    sections = DOCS.read_text().split("\n## ")
    (body,) = [s for s in sections if s.startswith("Tabular and image workloads")]
    assert body.count("### ") == len(
        [p for p in REPORTS.glob("*.json") if "decomposition" in json.loads(p.read_text())]
    ), f"every tabular report under {headings[tabular]}"


def test_every_figure_is_in_the_report_its_table_names():
    text = DOCS.read_text()
    assert "Source: `docs/reports/" in text
    tables = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(tables) > 5
    assert unsourced_figures(text, ROOT) == []


def test_a_figure_no_report_holds_fails_the_check():
    text = DOCS.read_text()
    # the first rows/s figure of the first comparison table, changed by a little
    row = next(line for line in text.splitlines() if line.startswith("| `") and "x |" in line)
    figure = re.findall(r"\| ([\d,]{5,}) \|", row)[0]
    forged = text.replace(row, row.replace(figure, "987,654,321", 1))
    problems = unsourced_figures(forged, ROOT)
    assert len(problems) == 1 and "987,654,321" in problems[0]


def test_every_table_is_stamped():
    text = DOCS.read_text()
    stamps = re.findall(r"_Measured (\d{4}-\d\d-\d\d) at commit `([^`]+)` on (.+?), .*load", text)
    sources = re.findall(r"Source: `([^`]+)`", text)
    assert stamps and len(stamps) == len(sources)
    for _date, commit, cpu in stamps:
        assert commit != "unknown" and cpu


def test_a_report_without_its_environment_cannot_be_stamped():
    with pytest.raises(DocsError, match="x.json: the report has no run_at, cpu_model, load"):
        stamp({"variants": []}, "x.json")


def test_headline_replaces_only_between_its_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nintro\n{HEADLINE_START}\nold table\n{HEADLINE_END}\nrest\n")
    replace_headline(readme, "| new | table |")
    assert readme.read_text() == (
        f"# title\n\nintro\n{HEADLINE_START}\n| new | table |\n{HEADLINE_END}\nrest\n"
    )
    replace_headline(readme, "| newer |")  # idempotent: the block is replaced, not appended
    assert readme.read_text().count("| new") == 1 and "| newer |" in readme.read_text()


def test_a_readme_without_markers_fails_naming_them(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# title\n")
    with pytest.raises(DocsError, match="headline:start"):
        replace_headline(readme, "| table |")
    assert readme.read_text() == "# title\n"


def test_nightly_reports_of_other_sizes_and_workloads_are_kept_side_by_side():
    from leanscore.bench.docs import report_name

    small = {"x_pytorch": {}, "results": [], "sizes": [200_000, 1_000_000]}
    large = small | {"sizes": [2_000_000, 10_000_000]}
    user = large | {"workload": "user-mlp"}
    assert [report_name(small), report_name(large), report_name(user)] == [
        "nightly-wide-mlp-1000000",
        "nightly-wide-mlp-10000000",
        "nightly-user-mlp-10000000",
    ]
    assert report_name({"x_pytorch": {}, "results": []}) == "nightly"


def test_the_headline_comes_from_a_comparison_report_only(tmp_path):
    from leanscore.bench.docs import collect

    nightly = tmp_path / "nightly.json"
    nightly.write_text(json.dumps({"x_pytorch": {}, "results": []}))
    with pytest.raises(DocsError, match="not a comparison report"):
        collect([], tmp_path / "reports", headline=nightly)


def test_report_docs_command_writes_the_page_and_the_headline(tmp_path):
    """The command as ``make bench`` runs it: reports copied in, the page written, README's
    headline filled between its markers; without markers it exits 1 naming them."""
    import shutil

    from leanscore.jobs.cli import app
    from typer.testing import CliRunner

    comparison = next(p for p in sorted(REPORTS.glob("*.json")) if "variants" in p.read_text())
    reports = tmp_path / "reports"
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{HEADLINE_START}\n{HEADLINE_END}\nrest\n")
    shutil.copy(comparison, tmp_path / "in.json")
    args = ["report", "docs", "--report", str(tmp_path / "in.json"), "--headline"]
    args += [str(comparison), "--reports-dir", str(reports), "--out", str(tmp_path / "b.md")]
    result = CliRunner().invoke(app, [*args, "--readme", str(readme)])
    assert result.exit_code == 0, result.output
    assert (reports / "headline.json").is_file() and (tmp_path / "b.md").is_file()
    text = readme.read_text()
    assert text.startswith(f"intro\n{HEADLINE_START}\n_Measured ") and text.endswith(
        f"{HEADLINE_END}\nrest\n"
    )
    assert "| workload | variant | rows/s |" in text
    readme.write_text("no markers\n")
    result = CliRunner().invoke(app, [*args, "--readme", str(readme)])
    assert result.exit_code == 1 and "headline:start" in result.output


def test_the_demo_report_of_several_workloads_makes_one_headline_table():
    """The demo writes {"workloads": {name: comparison report}}: one row block per workload,
    stamped from the run's environment."""
    from leanscore.bench.docs import headline_lines

    comparison = json.loads((REPORTS / "digits-mlp.json").read_text())
    demo = {"run_date": "2026-12-03", "workloads": {"wide-mlp": comparison, "digits": comparison}}
    lines = headline_lines(demo, "x.json")
    assert lines[0].startswith("_Measured ")
    rows = [line for line in lines if line.startswith("| wide-mlp |")]
    assert rows and len(rows) == len([line for line in lines if line.startswith("| digits |")])


def test_a_demo_report_among_the_sections_is_refused(tmp_path):
    """The demo's report of several workloads makes README's headline; under another name in
    the reports folder the page cannot show it, and says so instead of dropping it."""
    (tmp_path / "demo-run.json").write_text((REPORTS / "headline.json").read_text())
    with pytest.raises(DocsError, match="demo-run.json: a demo report is read as README's"):
        benchmarks_markdown(tmp_path, relative_to=tmp_path)


def test_reports_are_stamped_with_the_checkouts_commit():
    """Every bench report carries the commit it measured; reading it from a directory that is
    not the checkout (as the bench did once its package moved) stamps nothing."""
    import subprocess

    from leanscore.bench.metrics import source_commit

    repo = Path(__file__).resolve().parents[1]
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    stamp = source_commit()
    assert stamp is not None and stamp.removesuffix("+dirty") == head


def test_the_images_targets_are_printed_as_the_report_judged_them():
    import json

    from leanscore.bench.docs import image_target_lines

    root = Path(__file__).resolve().parents[1]
    report = json.loads((root / "docs" / "reports" / "fashion-cnn.json").read_text())
    lines = image_target_lines(report)
    rows = [line for line in lines if line.startswith("| ") and "target on real photos" not in line]
    assert len(rows) == 1 + len(report["images"]["targets"])  # the alignment row, then one each
    report["images"]["targets"][2]["met"] = False
    failing = image_target_lines(report)
    assert "| NOT met |" in failing[5] and "| met |" in failing[4]
    assert image_target_lines({k: v for k, v in report.items() if k != "images"}) == []
