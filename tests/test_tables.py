"""Printed tables are complete at any width: in a 100-column terminal no variant name or number
is cut (rows keyed with a legend, columns split over tables), and off a terminal they print as
Markdown lines in full, however long."""

from __future__ import annotations

import re
from io import StringIO

from leanscore.bench.compare import comparison_table, decomposition_table
from leanscore.bench.decompose import BenchTargets, decompose
from leanscore.jobs.compress import steps_table
from leanscore.jobs.tables import print_table
from rich.cells import cell_len
from rich.console import Console

NAMES = [
    "torch-fp32/predict_batch_udf",
    "onnx-fp32/predict_batch_udf@4096",
    "onnx-fp32/leanscore-spark-reader",
    "wide-mlp-distilled-tiny-int8-autotuned/leanscore",
]


def _variant(name: str, i: int) -> dict:
    return {
        "name": name,
        "model": name.split("/")[0],
        "path": "predict_batch_udf" if "predict" in name else "leanscore",
        "engine": "spark",
        "compressed": "int8" in name,
        "rows_per_s": 123_456.7 * (i + 1),
        "wall_s": 8.1 / (i + 1),
        "wall_s_spread": 0.4,
        "usd_per_million_rows": 0.01234 / (i + 1),
        "monthly_usd": 12_345.67 / (i + 1),
        "savings_pct": 10.0 * i,
        "accuracy": 0.9712 - 0.001 * i,
        "accuracy_interval": [0.9551, 0.9823],
        "fidelity": {"agreement": 0.9987},
        "model_bytes": 1_234_567 // (i + 1),
        "time_breakdown": {
            "shares": {"read_s": 0.1, "model_s": 0.6, "convert_s": 0.1, "spark_s": 0.2}
        },
    }


def _report() -> dict:
    variants = [_variant(n, i) for i, n in enumerate(NAMES)]
    return {
        "rows": 1_000_000,
        "cores": 2,
        "distinct_examples": 450,
        "variants": variants,
        "decomposition": decompose(variants, BenchTargets()),
    }


def _terminal(width: int = 100) -> tuple[Console, StringIO]:
    out = StringIO()
    return Console(file=out, width=width, force_terminal=True, color_system=None), out


def _plain() -> tuple[Console, StringIO]:
    out = StringIO()
    return Console(file=out, width=80, force_terminal=False, color_system=None), out


def _cells(table) -> list[str]:
    return [cell for row in table.rows for cell in row]


def test_comparison_table_fits_a_100_column_terminal_and_cuts_nothing():
    table = comparison_table(_report())
    console, out = _terminal()
    print_table(console, table)
    text = out.getvalue()
    assert max(cell_len(line) for line in text.splitlines()) <= 100
    for name in NAMES:  # every name whole, in the legend
        assert re.search(rf"^[A-Z] = {re.escape(name)}$", text, re.M), name
    for cell in _cells(table)[1:]:
        assert cell in text, cell
    assert "450 distinct examples" in text
    assert "…" not in text  # nothing ellipsised


def test_a_table_that_fits_is_printed_whole_without_a_legend():
    table = decomposition_table(_report())
    table.rows = table.rows[:1]
    table.rows[0] = [c[:10] for c in table.rows[0]]
    console, out = _terminal(200)
    print_table(console, table)
    assert " = " not in out.getvalue() and table.rows[0][0] in out.getvalue()


def test_off_a_terminal_tables_print_at_a_fixed_width_in_full():
    """A log (no terminal, a console assuming 80 columns) gets the table at 100 columns,
    every line whole: nothing wrapped or cropped to the console's 80."""
    table = comparison_table(_report())
    console, out = _plain()
    print_table(console, table)
    text = out.getvalue()
    assert 80 < max(cell_len(line) for line in text.splitlines()) <= 100  # not cut to 80
    for name in NAMES:
        assert re.search(rf"^[A-Z] = {re.escape(name)}$", text, re.M), name
    for cell in _cells(table)[1:]:
        assert cell in text, cell
    # the same table printed by rich directly (as console.print(table)) is complete too
    console, out = _plain()
    console.width = 100
    console.print(table)
    assert all(cell in out.getvalue() for cell in _cells(table)[1:])


def test_markdown_lines_hold_every_cell():
    table = comparison_table(_report())
    lines = table.markdown_lines()
    for cells in table.rows:
        assert "| " + " | ".join(cells) + " |" in lines


def test_the_compress_step_table_fits_and_prints_in_full():
    step = {
        "params": 123_456,
        "onnx_bytes": 1_234_567,
        "zipped_bytes": 987_654,
        "rows_per_s_1thread": 1_222_520.0,
        "accuracy": 0.9712,
        "fidelity": {"agreement": 0.9987},
        "vs_baseline": {"speedup_1thread": 10.52, "onnx_bytes_smaller": 12.2},
    }
    metrics = {
        "baseline": {**step, "vs_baseline": None, "distinct_examples": 450},
        "steps": [
            {**step, "index": i, "step": s, "effect": f"{s}: a long note about what it did"}
            for i, s in enumerate(["structured_prune", "distill", "quantize_dynamic"], 1)
        ],
    }
    table = steps_table(metrics, title="digits-mlp-demo")
    console, out = _terminal()
    print_table(console, table)
    text = out.getvalue()
    assert max(cell_len(line) for line in text.splitlines()) <= 100
    for cell in _cells(table):
        if not cell.startswith(("1 ", "2 ", "3 ", "baseline")):
            assert cell in text, cell
    assert "3 quantize_dynamic" in text and "450 distinct" in text
    console, out = _plain()
    print_table(console, table)
    assert "3 quantize_dynamic" in out.getvalue() and "1,222,520" in out.getvalue()
