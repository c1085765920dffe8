"""The ``truncate_trees`` recipe step's work: find the fewest boosting stages of a tree ensemble
whose held-out accuracy and agreement with the full model stay within the recipe's budget, and
cut the graph there (``leanscore.compression.trees`` does the cutting).

Every candidate is a real cut graph run by ONNX Runtime on the evaluation rows, so what is
chosen is what the gate then measures. The stages are tried from the fewest up and the first
within budget is kept: accuracy need not grow monotonically with the number of trees, so a
bisection could skip the smallest good count. The rows the count is chosen on are the rows the
gate decides on; report an unbiased figure with ``data.also_evaluate``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from leanscore.compression import trees
from leanscore.compression.data import LabelledData
from leanscore.compression.evaluate import (
    accuracy,
    accuracy_interval,
    distinct_rows,
    fidelity,
    run_onnx,
    single_thread_session,
)


def _within(acc, agreement, base_acc, *, max_accuracy_drop, min_fidelity) -> bool:
    measurable = max_accuracy_drop is not None and acc is not None and base_acc is not None
    if measurable and 100.0 * (base_acc - acc) > max_accuracy_drop + 1e-9:
        return False
    if min_fidelity is None:
        return True
    return agreement is not None and agreement >= min_fidelity


def truncate_within_budget(
    onnx_bytes: bytes,
    evaluation: LabelledData,
    baseline_outputs: np.ndarray,
    *,
    stages: int | None,
    min_stages: int = 1,
    stride: int = 1,
    max_accuracy_drop: float | None,
    min_fidelity: float | None,
    task: str,
    output: str | None,
    say: Callable[[str], None] = lambda msg: None,
) -> tuple[bytes, dict]:
    """(the cut graph, what the step reports): stages and trees before and after, bytes,
    accuracy with its Wilson 95% interval, agreement with the full model, and the curve of
    every count tried."""
    before = trees.describe(onnx_bytes)
    labels = evaluation.labels if task == "classification" else None
    base_acc = accuracy(baseline_outputs, labels, task=task)

    def measure(k: int) -> tuple[bytes, np.ndarray, float | None, float | None]:
        cut = trees.truncate(onnx_bytes, k)
        out = run_onnx(single_thread_session(cut), evaluation.features, output=output)
        # None where the task has no classes to agree on: never a made-up perfect 1.0
        agreement = fidelity(out, baseline_outputs, task=task).get("agreement")
        return cut, out, accuracy(out, labels, task=task), agreement

    curve = []
    if stages is not None:
        if stages > before.stages:
            raise trees.TreeEnsembleError(
                f"stages is {stages} but the ensemble has {before.stages} stages"
            )
        chosen = stages
        cut, out, acc, agreement = measure(stages)
        curve.append([stages, acc, agreement])
    else:
        if task != "classification" or (labels is None and min_fidelity is None):
            raise trees.TreeEnsembleError(
                "searching for the fewest stages needs a budget it can measure: a classifier "
                "with labelled evaluation rows (max_accuracy_drop) or min_fidelity; for other "
                "models give 'stages'"
            )
        counts = list(range(min(min_stages, before.stages), before.stages, stride))
        counts.append(before.stages)
        for k in counts:
            cut, out, acc, agreement = measure(k)
            curve.append([k, acc, agreement])
            if _within(
                acc,
                agreement,
                base_acc,
                max_accuracy_drop=max_accuracy_drop,
                min_fidelity=min_fidelity,
            ):
                chosen = k
                break
        say(
            f"  truncate_trees: {chosen} of {before.stages} stages is the fewest within "
            f"budget ({len(curve)} counts tried)"
        )
    after = trees.describe(cut)
    detail = {
        "op_type": before.op_type,
        "trees_per_stage": before.trees_per_stage,
        "stages_before": before.stages,
        "stages_after": after.stages,
        "trees_before": before.trees,
        "trees_after": after.trees,
        "nodes_before": before.nodes,
        "nodes_after": after.nodes,
        "bytes_before": len(onnx_bytes),
        "bytes_after": len(cut),
        "chosen_by": "given" if stages is not None else "fewest stages within budget",
        "selected_on": {"rows": len(evaluation.features), **evaluation.source},
        "agreement_with_full_model": agreement,
        "curve": curve,
        "curve_columns": ["stages", "accuracy", "agreement_with_full_model"],
        "effect": f"{before.trees} -> {after.trees} trees",
    }
    if acc is not None:
        # copies of one example are not independent draws: the interval counts distinct ones
        n = int((evaluation.source or {}).get("distinct_examples") or 0) or distinct_rows(
            evaluation.features
        )
        low, high = accuracy_interval(acc, n)
        detail["distinct_examples"] = n
        detail["accuracy_interval_95"] = {"low": low, "high": high, "method": "wilson"}
        detail["full_model_accuracy"] = base_acc
        base_low, base_high = accuracy_interval(base_acc, n)
        detail["full_model_accuracy_interval_95"] = {"low": base_low, "high": base_high}
    return cut, detail
