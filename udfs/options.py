"""The scoring options, validated once: ``ScoringOptions`` (and the row policies it holds).

Every scoring path (the nightly job, ``score_dataframe``, ``score_table``, ``model_udf``, the
MLflow pyfunc, the bench) builds one frozen ``ScoringOptions`` on the driver, from the job's
config or from the public functions' keyword-only arguments (``ScoringOptions.of``), and hands
that one object to the engine; the ``Scorer`` carries it into the tasks. Each option's legal
range and default live here and nowhere else, so a bad value fails once, on the driver, naming
the option, instead of several modules each checking (or forgetting to check) their copy of a
keyword argument. The object is small and picklable: it holds names and numbers only.

The engine (``leanscore.udfs.engines``) is not an option here: it decides how the options are
applied, and its name is checked by the engine registry.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from leanscore.udfs.distribution import DEFAULT_PATH_THRESHOLD_BYTES
from leanscore.udfs.session_cache import GraphOptimization, SessionConfig
from pydantic import BaseModel, ConfigDict, Field, ValidationError

BadRowPolicy = Literal["fail", "flag"]
OutOfRangePolicy = Literal["flag", "fail", "score_alone"]
LongTextPolicy = Literal["truncate", "bad"]
DEFAULT_RANGE_MARGIN = 0.5
DEFAULT_BATCH_SIZE = 4096
DEFAULT_ARROW_BATCH_ROWS = 10_000
DEFAULT_MAX_CHARS = 100_000

# Each option's type, legal range, default and description, said once: ``ScoringOptions``,
# ``RowPolicy`` and the nightly job configs (``leanscore.jobs.score``, ``leanscore.jobs.embed``)
# declare their fields with these.
BatchSize = Annotated[
    int | None,
    Field(
        default=None,
        gt=0,
        description="rows per ONNX Runtime call; default: the model family's (4,096 numeric "
        "rows, 16 texts)",
    ),
]
ArrowBatchRows = Annotated[
    int, Field(default=DEFAULT_ARROW_BATCH_ROWS, gt=0, description="rows per Arrow batch")
]
RangeMargin = Annotated[
    float,
    Field(
        default=DEFAULT_RANGE_MARGIN,
        ge=0.0,
        allow_inf_nan=False,
        description="how far past the calibrated range a value may go, in calibrated widths",
    ),
]
OutOfRange = Annotated[
    OutOfRangePolicy,
    Field(
        default="score_alone",
        description="rows with a feature outside the artifact's calibrated range: scored in a "
        "call of their own (no other row's prediction can change), flagged, or failing the job",
    ),
]
IntraOpThreads = Annotated[
    int | None, Field(default=None, gt=0, description="threads per task; default spark.task.cpus")
]
PathThresholdBytes = Annotated[
    int,
    Field(
        default=DEFAULT_PATH_THRESHOLD_BYTES,
        ge=0,
        description="models above this size reach executors by their artifact path (0: always)",
    ),
]
MaxLength = Annotated[
    int | None, Field(default=None, gt=0, description="tokens; default: the artifact's size")
]
MaxChars = Annotated[
    int,
    Field(default=DEFAULT_MAX_CHARS, gt=0, description="longer texts are bad rows, always"),
]
LongText = Annotated[
    LongTextPolicy,
    Field(default="truncate", description="texts over max_length tokens: truncate, or bad rows"),
]

_CHOICES = (
    "bad_rows: fail|flag; out_of_range: flag|fail|score_alone; range_margin: a number >= 0; "
    "long_text: truncate|bad; path_threshold_bytes: a whole number >= 0 (0: always by path); "
    "batch_size, arrow_batch_rows, max_task_bytes, intra_op_threads, max_length, max_chars: "
    "positive whole numbers"
)


class RowPolicy(BaseModel):
    """What happens to rows the model cannot score as they are, validated once on the driver.

    - ``bad_rows``: a null, NaN or infinite feature, a wrong-length array, or a non-finite model
      output: ``fail`` stops naming the row, ``flag`` gives a null prediction and the reason.
    - ``out_of_range``: a feature outside the calibrated range widened by ``range_margin``
      times the feature's calibrated width (a feature that was constant gets a width of
      ``max(1, |value|)``) on each side: ``score_alone``, ``flag`` or ``fail``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    bad_rows: BadRowPolicy = "fail"
    out_of_range: OutOfRange
    range_margin: RangeMargin


def _one_line(err: ValidationError) -> ValueError:
    problem = err.errors()[0]
    name = ".".join(str(p) for p in problem["loc"])
    return ValueError(f"{name} is {problem.get('input')!r}: {problem['msg']} ({_CHOICES})")


def row_policy(
    bad_rows: BadRowPolicy | RowPolicy,
    *,
    out_of_range: OutOfRangePolicy | None = None,
    range_margin: float | None = None,
) -> RowPolicy:
    """One ``RowPolicy`` from the public keyword options: ``bad_rows`` is a policy name or a
    whole ``RowPolicy``; ``out_of_range``/``range_margin``, when given, replace its fields."""
    fields = _policy_fields(bad_rows, out_of_range=out_of_range, range_margin=range_margin)
    try:
        return RowPolicy.model_validate(fields)
    except ValidationError as err:
        raise _one_line(err) from None


def _policy_fields(bad_rows, *, out_of_range=None, range_margin=None) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if isinstance(bad_rows, RowPolicy):
        fields.update(bad_rows.model_dump())
    elif bad_rows is not None:
        fields["bad_rows"] = bad_rows
    if out_of_range is not None:
        fields["out_of_range"] = out_of_range
    if range_margin is not None:
        fields["range_margin"] = range_margin
    return fields


def task_cpus(spark) -> int:
    """``spark.task.cpus`` (default 1): the ONNX Runtime threads one task may use."""
    try:
        return max(1, int(spark.conf.get("spark.task.cpus", "1")))
    except Exception:  # Connect servers may refuse to show some confs
        return 1


class ShadowSpec(BaseModel):
    """What the tasks need to shadow: the reference artifact's local directory, the fraction
    of rows sampled and the run date's seed. Small and picklable: names and numbers only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reference: str = Field(min_length=1)
    fraction: float = Field(gt=0.0, le=1.0)
    seed: int = Field(ge=0, lt=2**64)


class ScoringOptions(BaseModel):
    """Every option of one scoring run, with its legal range and default.

    Columns: ``key_columns`` name a row in bad-row errors; ``keep_columns`` are the input
    columns kept next to the outputs (None: all of them); ``output_column`` names the
    prediction (``<output_column>_error`` holds a flagged row's reason); ``probabilities`` adds
    the full probability vector of a classifier.

    The model: ``batch_size`` rows per ONNX Runtime call (None: the family's own, 4,096 numeric
    rows or 16 texts); ``arrow_batch_rows`` rows per Arrow batch the scan engine reads; the row
    policies (``bad_rows``, ``out_of_range``, ``range_margin``: see ``RowPolicy``); ONNX
    Runtime's ``intra_op_threads`` (None: ``spark.task.cpus``), ``graph_optimization``,
    ``memory_arena`` and ``disabled_optimizers`` (graph optimisers left out; None: the family's
    choice); models above ``path_threshold_bytes`` reach executors by their path instead of a
    broadcast; a scan task reads at most ``max_task_bytes`` (None:
    ``spark.sql.files.maxPartitionBytes``).

    Texts (the text families; other families refuse a value other than the default):
    ``max_length`` tokens per text (None: the artifact's ``size``, which is also the most);
    a text over it is truncated (``long_text='truncate'``, as sentence encoders do) or is a bad
    row (``'bad'``); a text over ``max_chars`` characters is always a bad row (checked before
    tokenizing); ``sort_by_length`` orders each batch's texts by token count before cutting
    calls, so short texts are not padded to a long one.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_columns: tuple[str, ...] = ()
    keep_columns: tuple[str, ...] | None = None
    output_column: str = Field(default="prediction", min_length=1)
    probabilities: bool = False
    batch_size: BatchSize
    arrow_batch_rows: ArrowBatchRows
    bad_rows: BadRowPolicy = "fail"
    out_of_range: OutOfRange
    range_margin: RangeMargin
    intra_op_threads: IntraOpThreads
    graph_optimization: GraphOptimization = "all"
    memory_arena: bool = True
    disabled_optimizers: tuple[str, ...] | None = None
    path_threshold_bytes: PathThresholdBytes
    max_task_bytes: int | None = Field(default=None, gt=0)
    max_length: MaxLength
    long_text: LongText
    max_chars: MaxChars
    sort_by_length: bool = True
    shadow: ShadowSpec | None = None

    @property
    def policy(self) -> RowPolicy:
        return RowPolicy(
            bad_rows=self.bad_rows, out_of_range=self.out_of_range, range_margin=self.range_margin
        )

    def session_config(self, spark=None) -> SessionConfig:
        """ONNX Runtime's settings for the tasks; threads default to ``spark.task.cpus``."""
        threads = self.intra_op_threads or (task_cpus(spark) if spark is not None else 1)
        return SessionConfig(
            intra_op_threads=threads,
            graph_optimization=self.graph_optimization,
            memory_arena=self.memory_arena,
            disabled_optimizers=self.disabled_optimizers,
        )

    def text_settings_given(self) -> list[str]:
        """The text options set to something other than their default (what a family that
        reads no text refuses)."""
        defaults = ScoringOptions()
        return [
            name
            for name in ("max_length", "long_text", "max_chars", "sort_by_length")
            if getattr(self, name) != getattr(defaults, name)
        ]

    @classmethod
    def of(
        cls,
        options: ScoringOptions | None = None,
        *,
        bad_rows: BadRowPolicy | RowPolicy | None = None,
        session_config: SessionConfig | None = None,
        **given: Any,
    ) -> ScoringOptions:
        """``options`` (default: the defaults) with the keyword options that were given (not
        None) in their place: the one conversion from the public functions' keyword-only
        arguments. ``bad_rows`` may be a whole ``RowPolicy`` (``out_of_range`` and
        ``range_margin``, when given, replace its fields); ``session_config`` sets the ONNX
        Runtime fields. A bad value raises one ``ValueError`` naming the option."""
        fields = {} if options is None else options.model_dump()
        given = {k: v for k, v in given.items() if v is not None}
        fields.update(
            _policy_fields(
                bad_rows,
                out_of_range=given.pop("out_of_range", None),
                range_margin=given.pop("range_margin", None),
            )
        )
        if session_config is not None:
            fields.update(
                intra_op_threads=session_config.intra_op_threads,
                graph_optimization=session_config.graph_optimization,
                memory_arena=session_config.memory_arena,
                disabled_optimizers=session_config.disabled_optimizers,
            )
        for name in ("key_columns", "keep_columns", "disabled_optimizers"):
            if isinstance(given.get(name), list):
                given[name] = tuple(given[name])
        fields.update(given)
        try:
            return cls.model_validate(fields)
        except ValidationError as err:
            raise _one_line(err) from None
