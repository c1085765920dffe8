"""The ``python_function`` flavor of models that leanscore registers in MLflow.

``mlflow.pyfunc.load_model`` and ``mlflow.pyfunc.spark_udf`` load it through ``_load_pyfunc``.
It scores with leanscore's own kernel (the same float32 matrix, bad-row checks, chunking and
ONNX Runtime settings as ``leanscore score``, one intra-op thread) and returns the columns the
nightly job writes: ``prediction`` and ``probability`` for a classifier, ``prediction`` for a
regression, ``embedding`` for an embedding model. MLflow's ONNX pyfunc is not used because it
flattens every output to one dimension and cannot score a classifier row by row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from leanscore.compression.artifact import Artifact
from leanscore.compression.tabular_inputs import Batch, from_array
from leanscore.udfs.distribution import ModelSource
from leanscore.udfs.kernel import Scorer
from leanscore.udfs.options import ScoringOptions

# leanscore score's defaults (rows per ONNX Runtime call, bad rows fail), one intra-op thread
OPTIONS = ScoringOptions(intra_op_threads=1)


class LeanscorePyfunc:
    """Scores a pandas DataFrame (or a float matrix) with the artifact in ``folder``."""

    def __init__(self, folder: Path):
        artifact = Artifact.load(folder)  # checks the manifest and the model's sha256
        manifest = artifact.manifest
        self.manifest = manifest
        source = ModelSource(
            manifest.name, manifest.sha256, "closure", data=artifact.read_model_bytes()
        )
        self.scorer = Scorer.build(manifest, source, OPTIONS.session_config(), options=OPTIONS)
        self.scorer.family.attach(artifact)  # a text model's tokenizer

    def _batch(self, data) -> Batch:
        spec = self.manifest.features
        if isinstance(data, dict):  # a tensor signature's feed: {input name: matrix}
            data = data.get(spec.array_column, next(iter(data.values()), None))
        if isinstance(data, np.ndarray) and data.dtype.kind in "OUS":  # texts
            return self.scorer.family.from_pandas([pd.Series(list(data.reshape(-1)))])
        if isinstance(data, np.ndarray):
            matrix = np.ascontiguousarray(data, dtype=np.float32).reshape(len(data), -1)
            if spec.image is not None:  # pixels for the image family to shape and normalise
                return self.scorer.family.from_pandas([pd.Series(list(matrix))])
            return from_array(pd.Series(list(matrix)), spec.array_column or "input", spec.size)
        if not isinstance(data, pd.DataFrame):
            raise TypeError(f"expected a pandas DataFrame or a numpy matrix, got {type(data)}")
        names = self.scorer.family.input_columns()
        missing = [c for c in names if c not in data.columns]
        if missing:
            raise ValueError(
                f"model {self.manifest.name!r} reads column {missing[0]!r}; the input has "
                f"{list(data.columns)}"
            )
        return self.scorer.family.from_pandas([data[c] for c in names])

    def predict(self, data, params=None) -> pd.DataFrame:
        scorer = self.scorer
        session, input_name = scorer.session()
        scored = scorer.score(session, input_name, self._batch(data), None)
        columns = scorer.columns(scored)
        if scorer.task == "classification":
            return pd.DataFrame(
                {"prediction": columns["label"], "probability": columns["probability"]}
            )
        if scorer.task == "regression":
            return pd.DataFrame({"prediction": columns["value"]})
        return pd.DataFrame({"embedding": list(columns["embedding"])})


def _load_pyfunc(path, model_config=None) -> LeanscorePyfunc:
    """MLflow's loader protocol: ``path`` is the model's data (``model.onnx``) or its folder."""
    path = Path(path)
    return LeanscorePyfunc(path if path.is_dir() else path.parent)
