"""Driver-side preparation every engine shares: the artifact, the ``Scorer`` the tasks run, and
the output columns checked against the input before any work.

The engines (``leanscore.udfs.engines``) differ in how rows reach the model and how results
leave; what they score with, and which columns they keep and write, is decided here once, from
the run's ``ScoringOptions``, so every engine gives the same columns and the same errors.
"""

from __future__ import annotations

import dataclasses
import logging
import os

from leanscore.compression.artifact import Artifact
from leanscore.compression.mlflow_registry import load_artifact
from leanscore.udfs.distribution import distribute
from leanscore.udfs.kernel import ERROR_FIELD, Scorer, output_fields
from leanscore.udfs.options import RowPolicy, ScoringOptions
from leanscore.udfs.schema import check_features, preview
from leanscore.udfs.shadow import ShadowScorer
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

log = logging.getLogger(__name__)


def as_artifact(artifact: Artifact | str | os.PathLike[str]) -> Artifact:
    """A loaded artifact, an artifact folder, or an MLflow URI (models:/NAME@ALIAS)."""
    return load_artifact(artifact)


def build_scorer(
    artifact: Artifact,
    *,
    spark: SparkSession | None,
    options: ScoringOptions | None = None,
    **settings,
) -> Scorer:
    """The ``Scorer`` for ``artifact`` under ``options`` (any ``ScoringOptions`` field given as
    a keyword replaces the option's value), with the model distributed to the executors."""
    options = ScoringOptions.of(options, **settings)
    warn_unguarded(artifact, options.policy)
    spark = spark or SparkSession.getActiveSession()
    if spark is None:
        raise RuntimeError("model_udf needs an active Spark session; start one first")
    source = distribute(spark, artifact, path_threshold_bytes=options.path_threshold_bytes)
    scorer = Scorer.build(artifact.manifest, source, options.session_config(spark), options=options)
    scorer.family.attach(artifact)
    if options.shadow is not None:
        scorer = dataclasses.replace(scorer, shadow=shadow_scorer(scorer, spark, options))
    return scorer


def shadow_scorer(scorer: Scorer, spark: SparkSession, options: ScoringOptions) -> ShadowScorer:
    """The reference model of ``options.shadow``, distributed as the scored model is, with
    ``bad_rows='flag'`` and ``out_of_range='score_alone'``: a row only the reference cannot score
    is left out of the comparison, it does not fail the run."""
    spec = options.shadow
    reference = load_artifact(spec.reference)
    ref_options = options.model_copy(
        update={"shadow": None, "bad_rows": "flag", "out_of_range": "score_alone"}
    )
    source = distribute(spark, reference, path_threshold_bytes=options.path_threshold_bytes)
    ref = Scorer.build(
        reference.manifest, source, ref_options.session_config(spark), options=ref_options
    )
    ref.family.attach(reference)
    allowed = None if scorer.range is None else (scorer.range[2], scorer.range[3])
    return ShadowScorer(
        ref, spec.fraction, spec.seed, tuple(options.key_columns), scorer.task, allowed
    )


def warn_unguarded(artifact: Artifact, policy: RowPolicy) -> None:
    """Say on the driver when an out-of-range row could change its batch mates' predictions:
    a batch-dependent artifact without a recorded input range (built before ranges were)."""
    manifest = artifact.manifest
    unguarded = manifest.input_range is None and manifest.batch_dependent is not False
    if unguarded and manifest.features.text_column is None:
        log.warning(
            "artifact %r records no input range, so out_of_range=%r cannot isolate extreme "
            "rows; its outputs may depend on the batch (dynamic quantization). Rebuild it "
            "with 'leanscore compress' to record the range",
            manifest.name,
            policy.out_of_range,
        )


def key_expression(key_columns: list[str]) -> Column:
    """``id=7,day=2026-01-01``: names the row in error messages."""
    parts = [
        F.concat(F.lit(f"{k}="), F.coalesce(F.col(k).cast("string"), F.lit("null")))
        for k in key_columns
    ]
    return parts[0] if len(parts) == 1 else F.concat_ws(",", *parts)


def output_names(fields: list[tuple[str, str]], output_column: str) -> dict[str, str]:
    """Flat output column per result field: classification ``prediction`` (label),
    ``probability`` (and ``probabilities``); regression ``prediction``; embeddings
    ``embedding``; plus ``<output_column>_error``."""
    rename = {
        "label": output_column,
        "value": output_column,
        "embedding": "embedding",
        "probability": "probability",
        "probabilities": "probabilities",
        ERROR_FIELD: f"{output_column}_error",
    }
    return {name: rename[name] for name, _ in fields}


def resolve_columns(
    df: DataFrame,
    artifact: Artifact,
    *,
    key_columns: list[str] | tuple[str, ...] | None,
    keep_columns: list[str] | tuple[str, ...] | None,
    output_column: str,
    probabilities: bool,
) -> tuple[list[str], list[str], list[tuple[str, str]], dict[str, str]]:
    """Check ``df`` against the model and the options, before any work: the key columns, the
    kept columns, the output fields and their column names."""
    check_features(df, artifact.manifest)
    keys = list(key_columns or [])
    keep = list(df.columns if keep_columns is None else keep_columns)
    for k in [*keys, *keep]:
        if k not in df.columns:
            raise ValueError(f"column {k!r} is not in the input; it has {preview(df.columns)}")
    fields = output_fields(artifact.manifest, probabilities=probabilities)
    names = output_names(fields, output_column)
    clash = [c for c in names.values() if c in keep]
    if clash:
        raise ValueError(
            f"the input already has a column {clash[0]!r}; drop it, leave it out of "
            "keep_columns, or choose another output_column"
        )
    return keys, keep, fields, names


def columns_for(
    df: DataFrame, artifact: Artifact, options: ScoringOptions
) -> tuple[list[str], list[str], list[tuple[str, str]], dict[str, str]]:
    """``resolve_columns`` with the run's options."""
    return resolve_columns(
        df,
        artifact,
        key_columns=options.key_columns,
        keep_columns=options.keep_columns,
        output_column=options.output_column,
        probabilities=options.probabilities,
    )
