"""A row's prediction never depends on the other rows of its batch.

Every artifact kind the demo and the bench build (float32, the pruned int8 demo recipe, the
distilled int8 one) plus the dynamic int8 kind (ONNX Runtime computes its activation scales per
call) is built small from ``conf/recipes`` and scored the way the job batches rows, and each row
alone: the classes must be identical, on normal rows and with extreme rows (1e6, 3e38, -3e38)
mixed in. Extreme rows follow ``out_of_range``; an output that is not finite is never written
without a flag. A control scores the dynamic model without the range guard to show the defect
the guard removes.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import make_artifact
from leanscore.compression.artifact import InputRange
from leanscore.compression.tabular_inputs import from_array
from leanscore.jobs.config import packaged_config, read_yaml
from leanscore.udfs.distribution import ModelSource
from leanscore.udfs.kernel import BadRowError, RowPolicy, Scorer, row_policy
from leanscore.udfs.session_cache import SessionConfig

OUTLIERS = (1e6, 3e38, -3e38)
JOB_BATCH = 4096  # rows per ONNX Runtime call, the job's default


def _steps(recipe_file: str, **quantize) -> list[dict]:
    steps = read_yaml(packaged_config("recipes") / recipe_file)["steps"]
    return [{**s, **quantize} if s["step"] == "quantize" else s for s in steps]


@pytest.fixture(scope="module")
def kinds(small_model, tmp_path_factory):
    """name -> artifact, built from the shipped recipes on the small test MLP (seconds)."""
    import copy

    root = tmp_path_factory.mktemp("kinds")
    recipes = {
        "fp32": _steps("digits-mlp-fp32.yaml"),
        "pruned-int8 (demo)": _steps("digits-mlp-demo.yaml"),
        "pruned-dynamic-int8": _steps("digits-mlp-demo.yaml", mode="dynamic_int8"),
        "distilled-int8": _steps("digits-mlp-distilled-int8.yaml"),
    }
    for steps in recipes.values():
        for step in steps:
            if step["step"] == "distill":
                step["epochs"] = 5
                step["compare_hard_labels"] = False
    return {
        name: make_artifact(
            copy.deepcopy(small_model), root / str(i), name=f"kind-{i}", recipe_steps=steps
        )
        for i, (name, steps) in enumerate(recipes.items())
    }


def _scorer(artifact, policy: RowPolicy) -> Scorer:
    manifest = artifact.manifest
    source = ModelSource(
        manifest.name, manifest.sha256, "closure", data=artifact.read_model_bytes()
    )
    return Scorer.build(
        manifest, source, SessionConfig(), batch_size=JOB_BATCH, bad_rows=policy, probabilities=True
    )


def _score(scorer: Scorer, rows: np.ndarray):
    """(labels with -1 for flagged rows, reasons, full outputs with NaN for flagged rows)."""
    session, name = scorer.session()
    scored = scorer.score(session, name, from_array(_series(rows), "features", 64), None)
    labels = np.full(len(rows), -1)
    probs = np.full((len(rows), 10), np.nan, dtype=np.float32)
    labels[scored.good] = scored.out.argmax(1)
    probs[scored.good] = scored.out
    return labels, list(scored.batch.reasons), probs


def _series(rows):
    import pandas as pd

    return pd.Series(list(rows))


def _alone(scorer: Scorer, rows: np.ndarray):
    one = [_score(scorer, rows[i : i + 1]) for i in range(len(rows))]
    return np.array([o[0][0] for o in one]), [o[1][0] for o in one]


def _with_outliers(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The held-out digits with one extreme row per value, spread over the batch."""
    rows = features.copy()
    where = np.array([5, 170, 333])
    for i, value in zip(where, OUTLIERS, strict=True):
        rows[i, 10 + i % 40] = value
    return rows, where


def test_manifest_records_range_and_batch_dependence(kinds, digits):
    train, _ = digits
    for name, artifact in kinds.items():
        manifest = artifact.manifest
        assert isinstance(manifest.input_range, InputRange)
        assert manifest.input_range.source == "train" and manifest.input_range.rows == len(
            train.features
        )
        np.testing.assert_allclose(manifest.input_range.low, train.features.min(0), rtol=1e-6)
        np.testing.assert_allclose(manifest.input_range.high, train.features.max(0), rtol=1e-6)
        assert manifest.batch_dependent is (name == "pruned-dynamic-int8"), name


@pytest.mark.parametrize(
    "kind", ["fp32", "pruned-int8 (demo)", "pruned-dynamic-int8", "distilled-int8"]
)
def test_batched_equals_alone_on_normal_rows_and_with_outliers(kinds, digits, kind):
    _, held_out = digits
    scorer = _scorer(kinds[kind], RowPolicy(bad_rows="flag"))  # the default out_of_range
    normal = held_out.features
    batched, reasons, _ = _score(scorer, normal)
    alone, _ = _alone(scorer, normal)
    assert (batched >= 0).all() and all(r is None for r in reasons)
    np.testing.assert_array_equal(batched, alone)

    rows, where = _with_outliers(normal)
    mixed, reasons, probs = _score(scorer, rows)
    mixed_alone, alone_reasons = _alone(scorer, rows)
    others = np.setdiff1d(np.arange(len(rows)), where)
    np.testing.assert_array_equal(mixed[others], batched[others])  # outliers change nothing
    np.testing.assert_array_equal(mixed, mixed_alone)
    assert reasons == alone_reasons
    for i in where:  # scored alone: a class, or flagged because the output is not finite
        assert (mixed[i] >= 0 and reasons[i] is None) or "not finite" in reasons[i], reasons[i]
    unflagged = np.array([r is None for r in reasons])
    assert np.isfinite(probs[unflagged]).all()  # no NaN written without a flag


@pytest.mark.parametrize("kind", ["fp32", "pruned-int8 (demo)", "distilled-int8"])
def test_probabilities_are_bitwise_batch_independent_for_fp32_and_static_int8(kinds, digits, kind):
    """Not only the classes: every probability of a row scored in a batch of 4,096 (with
    outliers among its batch mates) is the very float it gets scored alone."""
    _, held_out = digits
    scorer = _scorer(kinds[kind], RowPolicy(bad_rows="flag"))
    rows, where = _with_outliers(held_out.features)
    _, _, batched = _score(scorer, rows)
    alone = np.concatenate([_score(scorer, rows[i : i + 1])[2] for i in range(len(rows))])
    others = np.setdiff1d(np.arange(len(rows)), where)
    assert np.isfinite(batched[others]).all()
    np.testing.assert_array_equal(batched[others], alone[others])
    np.testing.assert_array_equal(np.isnan(batched), np.isnan(alone))


def test_without_the_range_guard_one_row_changes_the_others(kinds, digits):
    """The control: the dynamic int8 model with no recorded range (as before it was recorded)
    lets one extreme row rescale every row's activations."""
    _, held_out = digits
    scorer = _scorer(kinds["pruned-dynamic-int8"], RowPolicy(bad_rows="flag"))
    unguarded = dataclasses.replace(scorer, range=None)
    clean, _, clean_probs = _score(unguarded, held_out.features[1:])  # the others alone
    rows = held_out.features.copy()
    rows[0, :] = 1e6
    labels, reasons, probs = _score(unguarded, rows)
    changed = int((labels[1:] != clean).sum())
    drift = float(np.nanmax(np.abs(probs[1:] - clean_probs)))
    assert changed > 0 or drift > 0.05, (changed, drift)
    # Guarded, the extreme row goes in a call of its own and the others score bit for bit as
    # they do without it.
    _, _, guarded_clean = _score(scorer, held_out.features[1:])
    guarded, _, guarded_probs = _score(scorer, rows)
    np.testing.assert_array_equal(guarded[1:], clean)
    np.testing.assert_array_equal(guarded_probs[1:], guarded_clean)


@pytest.mark.parametrize("kind", ["fp32", "pruned-dynamic-int8"])
def test_outliers_follow_each_policy(kinds, digits, kind):
    _, held_out = digits
    flag = RowPolicy(bad_rows="flag", out_of_range="flag")
    _, natural, _ = _score(_scorer(kinds[kind], flag), held_out.features)
    # A few real held-out digits have ink where no training digit has: out of range too.
    outside = [i for i, r in enumerate(natural) if r is not None]
    assert len(outside) <= len(natural) // 100
    assert all("outside the calibrated range" in natural[i] for i in outside)
    in_range = np.delete(held_out.features, outside, axis=0)
    rows, where = _with_outliers(in_range)
    normal, _, _ = _score(_scorer(kinds[kind], RowPolicy(bad_rows="flag")), in_range)
    others = np.setdiff1d(np.arange(len(rows)), where)

    flagged, reasons, probs = _score(_scorer(kinds[kind], flag), rows)
    assert (flagged[where] == -1).all() and np.isnan(probs[where]).all()
    for i in where:
        assert "outside the calibrated range" in reasons[i] and "range_margin 0.5" in reasons[i]
    np.testing.assert_array_equal(flagged[others], normal[others])
    assert all(reasons[i] is None for i in others)

    with pytest.raises(
        BadRowError, match=r"row 5 of a batch: column 'features' element 15 is 1000000\.0, outside"
    ):
        _score(_scorer(kinds[kind], RowPolicy(out_of_range="fail")), rows)

    # score_alone under bad_rows=fail: a finite extreme prediction is kept; a NaN one fails
    alone = _scorer(kinds[kind], RowPolicy(bad_rows="fail", out_of_range="score_alone"))
    labels, _, _ = _score(alone, rows[[0, 7]])  # normal rows only
    assert (labels >= 0).all()
    if kind == "fp32":  # 3e38 overflows float32 inside the model: NaN output
        with pytest.raises(
            BadRowError, match=r"row 170 of a batch: the model's output is nan \(not finite\)"
        ):
            _score(alone, rows)
    # the margin widens the accepted range: a value just past it is flagged, inside is not
    high = np.array(kinds[kind].manifest.input_range.high, dtype=np.float32)
    low = np.array(kinds[kind].manifest.input_range.low, dtype=np.float32)
    width = np.where(high > low, high - low, np.maximum(1, np.abs(low)))
    near = np.tile(in_range[:1], (2, 1))
    near[0, 20] = high[20] + 0.4 * width[20]
    near[1, 20] = high[20] + 0.6 * width[20]
    _, near_reasons, _ = _score(
        _scorer(kinds[kind], RowPolicy(bad_rows="flag", out_of_range="flag")), near
    )
    assert near_reasons[0] is None and "element 20" in near_reasons[1]


def test_policy_options_are_validated_up_front():
    assert row_policy("flag", out_of_range="fail", range_margin=1.0) == RowPolicy(
        bad_rows="flag", out_of_range="fail", range_margin=1.0
    )
    assert row_policy(RowPolicy(bad_rows="flag"), range_margin=2.0).bad_rows == "flag"
    with pytest.raises(ValueError, match=r"out_of_range is 'isolate'"):
        row_policy("fail", out_of_range="isolate")
    with pytest.raises(ValueError, match=r"range_margin is -1"):
        row_policy("fail", range_margin=-1)
    with pytest.raises(ValueError, match=r"bad_rows is 'drop'"):
        row_policy("drop")


def _table(spark, features: np.ndarray, path: str) -> None:
    import pandas as pd

    pdf = pd.DataFrame({"row_id": np.arange(len(features), dtype=np.int64)})
    pdf["features"] = list(features.astype(np.float32))
    spark.createDataFrame(pdf, "row_id long, features array<float>").coalesce(1).write.format(
        "delta"
    ).save(path)


def test_nightly_job_and_every_path_keep_rows_independent(spark, kinds, digits, tmp_path):
    """End to end on real local Spark: the nightly job (scan engine) and score_dataframe
    (Arrow and pandas) on a Delta table with extreme rows mixed in, for the dynamic int8 model.
    Normal rows get the classes they get alone; no NaN is written without a flag."""
    from leanscore.jobs.score import ScoreConfig, run_score
    from leanscore.udfs import score_dataframe

    artifact = kinds["pruned-dynamic-int8"]
    _, held_out = digits
    rows, where = _with_outliers(held_out.features)
    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    _table(spark, rows, src)
    config = ScoreConfig.model_validate(
        {
            "artifact": str(artifact.path),
            "input": {"path": src},
            "output": {"path": out},
            "key_columns": ["row_id"],
            "bad_rows": "flag",
            "probabilities": True,
        }
    )
    summary = run_score(spark, config, "2026-01-01")
    assert summary["engine"] == "scan" and summary["rows_out"] == len(rows)
    job = spark.read.format("delta").load(out).orderBy("row_id").toPandas()
    alone, alone_reasons = _alone(_scorer(artifact, RowPolicy(bad_rows="flag")), rows)
    labels = job["prediction"].fillna(-1).astype(int).to_numpy()
    np.testing.assert_array_equal(labels, alone)
    assert [None if r is None or r != r else r for r in job["prediction_error"]] == alone_reasons
    unflagged = job["prediction_error"].isna()
    assert np.isfinite(np.stack(job.loc[unflagged, "probabilities"])).all()

    df = spark.read.format("delta").load(src)
    for engine in ("arrow", "pandas"):
        scored = score_dataframe(
            df, artifact, key_columns=["row_id"], engine=engine, bad_rows="flag"
        ).orderBy("row_id")
        got = scored.toPandas()["prediction"].fillna(-1).astype(int).to_numpy()
        np.testing.assert_array_equal(got, alone, err_msg=engine)
    with pytest.raises(Exception, match=r"row with key 'row_id=5'.*outside the calibrated range"):
        score_dataframe(df, artifact, key_columns=["row_id"], out_of_range="fail").collect()


def test_nightly_config_validates_the_row_policy_up_front(tmp_path):
    from leanscore.jobs.config import ConfigError, load_config
    from leanscore.jobs.score import ScoreConfig

    base = "artifact: a\ninput: {path: x}\noutput: {path: y}\n"
    good = tmp_path / "good.yaml"
    good.write_text(base + "out_of_range: flag\nrange_margin: 2\n")
    config = load_config(ScoreConfig, good)
    assert (config.out_of_range, config.range_margin) == ("flag", 2.0)
    for bad, key in (
        ("out_of_range: isolate", "out_of_range"),
        ("range_margin: -1", "range_margin"),
    ):
        path = tmp_path / "bad.yaml"
        path.write_text(base + bad + "\n")
        with pytest.raises(ConfigError, match=key):
            load_config(ScoreConfig, path)


def test_a_range_that_does_not_fit_the_features_is_refused(artifact, tmp_path):
    import json
    import shutil

    from leanscore.compression.artifact import Artifact, ArtifactError

    copy = tmp_path / "art"
    shutil.copytree(artifact.path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["input_range"]["low"] = manifest["input_range"]["low"][:32]
    manifest["input_range"]["high"] = manifest["input_range"]["high"][:32]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        ArtifactError, match=r"input_range holds 32 features but features.size is 64"
    ):
        Artifact.load(copy)
