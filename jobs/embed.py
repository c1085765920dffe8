"""The nightly text-embedding job: read a table of texts, embed, write the run date.

    leanscore embed --config conf/nightly-embed.yaml --run-date 2026-11-28

The score job with a text embedding model: the same nightly core (``leanscore.jobs.score.
run_nightly``: output-location, empty-input and null-key checks, the run date's partition
replaced and verified before it counts, restored on a mismatch, the failed-run summary), the
same engines (the scan engine reads a whole Parquet/Delta path inside the tasks; else
``mapInArrow`` over Spark's reader) and the same ``Scorer``, whose ``text_embedding`` family
tokenizes and embeds. This module only adds the text options to the config.
"""

from __future__ import annotations

import datetime as dt

from leanscore.compression.artifact import Artifact
from leanscore.jobs.score import NightlyConfig, NightlyJob, run_nightly, score_frame
from leanscore.udfs.options import ArrowBatchRows, LongText, MaxChars, MaxLength
from leanscore.udfs.text import embedding_artifact
from pydantic import Field, model_validator
from pyspark.sql import SparkSession

RENAMED = {"sub_batch_rows": "batch_size"}


class EmbedConfig(NightlyConfig):
    """A ``NightlyConfig`` for a text embedding artifact (model.onnx + tokenizer.json), plus how
    texts become tokens."""

    text_column: str | None = Field(default=None, description="default: the artifact's column")
    long_text: LongText
    max_length: MaxLength
    max_chars: MaxChars
    sort_by_length: bool = True
    arrow_batch_rows: ArrowBatchRows = 2_000  # texts cost more a row than numbers

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data):
        if isinstance(data, dict):
            for old, new in RENAMED.items():
                if old in data:
                    raise ValueError(f"{old!r} is now called {new!r}; rename the key")
        return data

    def family_options(self) -> dict:
        return {
            "output_column": "embedding",
            "long_text": self.long_text,
            "max_length": self.max_length,
            "max_chars": self.max_chars,
            "sort_by_length": self.sort_by_length,
        }

    def scoring_artifact(self, artifact: Artifact) -> Artifact:
        return embedding_artifact(artifact, text_column=self.text_column)


def score_text_table(spark: SparkSession, config: EmbedConfig, run_date: str | dt.date) -> dict:
    """Embed ``config.input`` into the ``run_date`` partition of ``config.output``; return the
    run summary (``leanscore.jobs.score.run_nightly``'s)."""
    return run_nightly(spark, config, run_date, EMBED_JOB)


EMBED_JOB = NightlyJob("embed", score_frame, "embedding_error", "sentences_per_s")
