"""The interface every scoring family implements (see ``leanscore.udfs.families``).

A family turns one batch of its input columns (pandas Series on the pandas path, Arrow arrays on
the Arrow and scan paths) into a ``Batch``: the model's input array plus which rows are bad and
why. The kernel (``leanscore.udfs.kernel``) applies the row policies, calls the model, and hands
the chosen output back to the family, which names the output columns. Both input methods must
give the same array for the same rows, so the engines give identical predictions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
from leanscore.compression.artifact import Artifact, Manifest
from leanscore.udfs.options import DEFAULT_BATCH_SIZE

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from leanscore.compression.tabular_inputs import Batch
    from leanscore.udfs.options import ScoringOptions
    from leanscore.udfs.session_cache import SessionConfig

_REGISTRY: dict[str, type[Family]] = {}


def registered(name: str) -> type[Family]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"no scoring family registered as {name!r} (registered: {sorted(_REGISTRY)})"
        ) from None


class Family:
    """One model family's scoring side, built from a manifest on the driver and pickled into
    the tasks: it must stay small and must not hold Spark objects."""

    name: ClassVar[str]
    #: rows per ONNX Runtime call when the run's ``batch_size`` is None
    default_batch_size: ClassVar[int] = DEFAULT_BATCH_SIZE

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            _REGISTRY[cls.name] = cls

    def __init__(self, manifest: Manifest):
        self.manifest = manifest

    def configure(self, options: ScoringOptions) -> None:
        """On the driver, once: take the run's options this family reads, refusing the ones it
        cannot honour (a family that reads no text refuses the text options)."""
        given = options.text_settings_given()
        if given:
            raise ValueError(
                f"{given[0]} is a text option, but model {self.manifest.name!r} (family "
                f"{self.name!r}) reads no text; leave it out"
            )

    def session_config(self, config: SessionConfig) -> SessionConfig:
        """ONNX Runtime's settings for this family's models (``config`` as the run gave it;
        a family may fill in what the run left to it, such as ``disabled_optimizers``)."""
        return config

    # --- inputs -------------------------------------------------------------------------
    def input_columns(self) -> list[str]:
        """The table columns the model reads, in the order the input methods receive them."""
        raise NotImplementedError

    def check_input_types(self, types: dict) -> None:
        """Fail on the driver, naming the column, when a Spark type cannot be read
        (``types``: column name -> ``pyspark.sql.types.DataType``)."""
        raise NotImplementedError

    def from_pandas(self, columns: list[pd.Series]) -> Batch:
        raise NotImplementedError

    def from_arrow(self, arrays: list[pa.Array]) -> Batch:
        raise NotImplementedError

    def element_name(self, j: int) -> str:
        """How feature ``j`` of a row reads in an error ("column 'x'", "column 'v' element 3")."""
        raise NotImplementedError

    def attach(self, artifact: Artifact) -> None:
        """On the driver, before the family is pickled into the tasks: take what scoring needs
        from the loaded artifact besides the model (a tokenizer's verified bytes). Most
        families need nothing."""

    def feeds(self, input_name: str, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """The ONNX Runtime feed for ``inputs`` (rows of ``Batch.matrix``)."""
        return {input_name: inputs}

    def nonfinite_hint(self) -> str:
        """What a non-finite model output for a row suggests, for its error."""
        return "its features may be far outside what the model was trained on"

    def call_groups(self, inputs: np.ndarray, batch_size: int) -> list[np.ndarray] | None:
        """Row positions of ``inputs`` for each ONNX Runtime call, when the family orders its
        calls (texts by length); None: consecutive chunks of ``batch_size`` rows."""
        return None

    # --- outputs ------------------------------------------------------------------------
    def result_output(self) -> str | None:
        """The name of the ONNX output that holds the result; None: the first output."""
        return self.manifest.result_output

    def output_fields(self, *, probabilities: bool = False) -> list[tuple[str, str]]:
        """The (name, Spark DDL type) fields of the result, before the error field."""
        raise NotImplementedError

    def output_columns(self, out: np.ndarray, fields: list[str]) -> dict[str, np.ndarray]:
        """Output name -> values for the rows of ``out`` (the good rows), in field order."""
        raise NotImplementedError
