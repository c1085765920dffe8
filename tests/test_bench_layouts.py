"""The feature-layouts bench: every layout holds the same numbers and scores to the same
predictions, and its report orders and renders them."""

from __future__ import annotations

import numpy as np
import pytest
from leanscore.bench.layouts import (
    LAYOUTS,
    LayoutsConfig,
    float32_bytes,
    measure_layouts,
    report_lines,
    table_rows,
    write_layouts,
)


def test_float32_bytes_are_each_rows_little_endian_numbers():
    matrix = np.arange(12, dtype=np.float32).reshape(3, 4) / 3
    array = float32_bytes(matrix)
    assert len(array) == 3 and array.null_count == 0
    for i, value in enumerate(array.to_pylist()):
        assert len(value) == 16
        np.testing.assert_array_equal(np.frombuffer(value, dtype="<f4"), matrix[i])


def _report(speeds: dict[str, float]) -> dict:
    base = speeds["array<float>"]
    return {
        "rows": 1000,
        "features": 4,
        "files": 2,
        "artifact": "m",
        "cores": 2,
        "repeats": 3,
        "layouts": {
            name: {
                "table_bytes": 1000,
                "read_rows_per_s": 2 * s,
                "score_rows_per_s": s,
                "score_x_array_float": s / base,
                "engine": "scan",
            }
            for name, s in speeds.items()
        },
    }


def test_the_table_lists_the_fastest_layout_first_with_its_ratio_to_the_nested_array():
    report = _report({"array<float>": 100.0, "binary": 250.0, "vector": 50.0})
    rows = table_rows(report)
    assert [r[0] for r in rows] == ["`binary`", "`array<float>`", "`vector`"]
    assert rows[0][3:5] == ["250", "2.50x"] and rows[2][4] == "0.50x"
    lines = report_lines(report)
    assert "| `binary` | 1,000 | 500 | 250 | 2.50x | scan |" in lines
    assert lines[0].endswith("Fastest to score: `binary`, 2.50x `array<float>`.")


def test_the_config_knows_every_layout_and_refuses_another():
    assert LayoutsConfig().layouts == list(LAYOUTS)
    with pytest.raises(ValueError, match="layouts"):
        LayoutsConfig(layouts=["array<float>", "parquet-map"])


@pytest.mark.slow
def test_every_layout_holds_the_same_rows_and_scores_them_alike(spark, artifact, tmp_path):
    """The digits table in every layout, written as the bench writes it, then measured once:
    each layout's table has the rows, and leanscore's predictions on it are those of the
    nested array's, row for row."""
    from leanscore.bench.demo.datagen import write_digits_table
    from leanscore.bench.layouts import layout_artifact
    from leanscore.udfs import score_table

    source = str(tmp_path / "source")
    write_digits_table(spark, source, 600, partitions=2)
    config = LayoutsConfig(rows=500, files=2, repeats=1, workdir=str(tmp_path / "layouts"))
    tables = write_layouts(spark, source, config, column="features", size=64)
    assert set(tables) == set(LAYOUTS)
    types = {name: dict(spark.read.format("delta").load(p).dtypes) for name, p in tables.items()}
    assert types["binary"]["features"] == "binary" and types["vector"]["features"] == "vector"
    assert types["array<double>"]["features"] == "array<double>"
    assert len(types["columns"]) == 65 and types["columns"]["features_0063"] == "float"

    def predictions(layout: str) -> list[int]:
        scored = score_table(
            spark, tables[layout], layout_artifact(artifact, layout), keep_columns=["row_id"]
        )
        frame = scored.orderBy("row_id").toPandas()
        assert len(frame) == 500 and frame["prediction_error"].isna().all()
        return frame["prediction"].tolist()

    expected = predictions("array<float>")
    for layout in LAYOUTS:
        assert predictions(layout) == expected, layout

    results = measure_layouts(spark, tables, artifact, config)
    assert set(results) == set(LAYOUTS)
    assert results["array<float>"]["score_x_array_float"] == 1.0
    assert {r["engine"] for r in results.values()} == {"scan"}  # each read inside the tasks
    for r in results.values():
        assert r["read_rows_per_s"] > 0 and r["score_rows_per_s"] > 0 and r["table_bytes"] > 0
