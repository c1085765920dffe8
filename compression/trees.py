"""Tree ensembles in ONNX (``ai.onnx.ml`` ``TreeEnsembleClassifier``/``TreeEnsembleRegressor``,
as skl2onnx and onnxmltools write scikit-learn, LightGBM and XGBoost models): count the trees
and keep the first k of them.

A gradient-boosted ensemble's score after k stages is its base value plus the leaf weights of
the first k stages' trees (the learning rate is already folded into the weights), so keeping
those trees' nodes and leaf weights, and the base values, gives exactly the model a booster
would have been with ``n_estimators=k``: scikit-learn's ``staged_predict_proba`` at k
(tested). A multi-class booster grows one tree per class per stage (tree ``i*K + c`` feeds class
``c``): it is cut at whole stages. Trees of an averaging ensemble (a random forest classifier
whose leaf weights were divided by the number of trees) would need their weights rescaled: this
module keeps weights as they are, which is right for boosting and for a regressor that
averages (ONNX Runtime divides by the trees present).

Pure graph surgery on the ONNX protobuf: no recipe, no Spark, no scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

TREE_OPS = ("TreeEnsembleClassifier", "TreeEnsembleRegressor")
ML_DOMAIN = "ai.onnx.ml"

# per-node attributes (one value per entry of nodes_treeids), and per-leaf-weight attributes
# (one value per entry of class_treeids / target_treeids); *_as_tensor are the opset-3 forms
_NODE_KEYS = (
    "nodes_falsenodeids",
    "nodes_featureids",
    "nodes_hitrates",
    "nodes_hitrates_as_tensor",
    "nodes_missing_value_tracks_true",
    "nodes_modes",
    "nodes_nodeids",
    "nodes_treeids",
    "nodes_truenodeids",
    "nodes_values",
    "nodes_values_as_tensor",
)
_LEAF_PREFIX = {"TreeEnsembleClassifier": "class_", "TreeEnsembleRegressor": "target_"}
_LEAF_SUFFIXES = ("ids", "nodeids", "treeids", "weights", "weights_as_tensor")


class TreeEnsembleError(ValueError):
    """The graph holds no tree ensemble leanscore can cut, or a cut that cannot be made."""


@dataclass(frozen=True)
class Ensemble:
    """What a graph's tree ensemble is: its op, trees, and trees per boosting stage."""

    op_type: str
    trees: int
    trees_per_stage: int
    nodes: int

    @property
    def stages(self) -> int:
        return self.trees // self.trees_per_stage


def _attrs(node) -> dict:
    return {a.name: a for a in node.attribute}


def _values(attr) -> np.ndarray:
    """An attribute's values as a numpy array (a list attribute or a tensor)."""
    if attr.type == onnx.AttributeProto.TENSOR:
        return numpy_helper.to_array(attr.t)
    return np.asarray(helper.get_attribute_value(attr))


def _ensemble_node(model: onnx.ModelProto):
    nodes = [n for n in model.graph.node if n.domain == ML_DOMAIN and n.op_type in TREE_OPS]
    if not nodes:
        ops = sorted({n.op_type for n in model.graph.node})
        later = [n.op_type for n in model.graph.node if n.op_type == "TreeEnsemble"]
        hint = (
            " (ai.onnx.ml opset 5's unified 'TreeEnsemble' op is not supported: convert with "
            "target_opset={'ai.onnx.ml': 3})"
            if later
            else ""
        )
        raise TreeEnsembleError(
            f"the graph holds no TreeEnsembleClassifier or TreeEnsembleRegressor node (its ops: "
            f"{ops}){hint}; truncate_trees applies to tree ensembles converted with skl2onnx or "
            "onnxmltools"
        )
    if len(nodes) > 1:
        raise TreeEnsembleError(
            f"the graph holds {len(nodes)} tree ensemble nodes "
            f"({[n.name or n.op_type for n in nodes]}); truncate_trees cuts a graph with one"
        )
    return nodes[0]


def has_tree_ensemble(onnx_bytes: bytes) -> bool:
    model = onnx.load_model_from_string(onnx_bytes)
    return any(n.domain == ML_DOMAIN and n.op_type in TREE_OPS for n in model.graph.node)


def tree_values(onnx_bytes: bytes) -> int:
    """Branch thresholds plus leaf weights plus base values of every tree ensemble in the
    graph: the learnt numbers a tree model stores in attributes rather than initializers."""
    model = onnx.load_model_from_string(onnx_bytes)
    total = 0
    for node in model.graph.node:
        if node.domain != ML_DOMAIN or node.op_type not in TREE_OPS:
            continue
        prefix = _LEAF_PREFIX[node.op_type]
        attrs = _attrs(node)
        total += int((_values(attrs["nodes_modes"]) != b"LEAF").sum())
        for key in (
            f"{prefix}weights",
            f"{prefix}weights_as_tensor",
            "base_values",
            "base_values_as_tensor",
        ):
            if key in attrs:
                total += int(_values(attrs[key]).size)
    return total


def _tree_ids(attrs: dict) -> np.ndarray:
    return np.unique(_values(attrs["nodes_treeids"]).astype(np.int64))


def _trees_per_stage(node, attrs: dict, tree_ids: np.ndarray) -> int:
    """K for a K-class booster whose tree ``i*K + c`` feeds only class ``c``; else 1."""
    if node.op_type != "TreeEnsembleClassifier":
        return 1
    leaf_trees = _values(attrs["class_treeids"]).astype(np.int64)
    leaf_class = _values(attrs["class_ids"]).astype(np.int64)
    classes = np.unique(leaf_class)
    k = len(classes)
    if k < 2 or len(tree_ids) % k:
        return 1
    expected = (leaf_trees - tree_ids.min()) % k
    stage_major = np.array_equal(classes, np.arange(k)) and np.array_equal(leaf_class, expected)
    return k if stage_major else 1


def describe(onnx_bytes: bytes) -> Ensemble:
    model = onnx.load_model_from_string(onnx_bytes)
    node = _ensemble_node(model)
    attrs = _attrs(node)
    ids = _tree_ids(attrs)
    return Ensemble(
        node.op_type, len(ids), _trees_per_stage(node, attrs, ids), len(attrs["nodes_treeids"].ints)
    )


def _replace(node, name: str, old, values: np.ndarray) -> None:
    """Put ``values`` back into attribute ``name`` in the form (list or tensor) it had."""
    if old.type == onnx.AttributeProto.TENSOR:
        new = helper.make_attribute(name, numpy_helper.from_array(values, name=old.t.name))
    elif old.type == onnx.AttributeProto.STRINGS:
        new = helper.make_attribute(name, [bytes(v) for v in values])
    elif old.type == onnx.AttributeProto.FLOATS:
        new = helper.make_attribute(name, [float(v) for v in values])
    else:
        new = helper.make_attribute(name, [int(v) for v in values])
    for i, attr in enumerate(node.attribute):
        if attr.name == name:
            node.attribute[i].CopyFrom(new)
            return


def truncate(onnx_bytes: bytes, stages: int) -> bytes:
    """The same graph with only the first ``stages`` boosting stages (trees in id order,
    ``trees_per_stage`` at a time); base values and everything outside the ensemble unchanged."""
    model = onnx.load_model_from_string(onnx_bytes)
    node = _ensemble_node(model)
    attrs = _attrs(node)
    ids = _tree_ids(attrs)
    per_stage = _trees_per_stage(node, attrs, ids)
    total = len(ids) // per_stage
    if not 1 <= stages <= total:
        raise TreeEnsembleError(
            f"cannot keep {stages} stages of an ensemble of {total} stages "
            f"({len(ids)} trees, {per_stage} per stage); keep 1 to {total}"
        )
    kept = ids[: stages * per_stage]
    node_keep = np.isin(_values(attrs["nodes_treeids"]).astype(np.int64), kept)
    prefix = _LEAF_PREFIX[node.op_type]
    leaf_keep = np.isin(_values(attrs[f"{prefix}treeids"]).astype(np.int64), kept)
    for key in _NODE_KEYS:
        if key in attrs:
            _replace(node, key, attrs[key], _values(attrs[key])[node_keep])
    for suffix in _LEAF_SUFFIXES:
        key = prefix + suffix
        if key in attrs:
            _replace(node, key, attrs[key], _values(attrs[key])[leaf_keep])
    onnx.checker.check_model(model)
    return model.SerializeToString()
