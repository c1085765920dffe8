"""The tabular bench rebuilds its model and artifacts whenever what they were built from
changes: a recipe's text, the training settings, the data's version, leanscore's version, or the
state_dict the artifacts were compressed from (no Spark needed: the key is read from the
manifests)."""

from __future__ import annotations

import json
from pathlib import Path

from leanscore.bench.prepare import (
    PrepareConfig,
    _file_sha256,
    build_basis,
    build_key,
    stale_artifacts,
)


def _write_artifact(path: Path, prepare: PrepareConfig, entry, source_sha: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    key = build_key(build_basis(prepare, entry))
    model_source = {"build_key": key, "source_model_sha256": source_sha}
    (path / "manifest.json").write_text(json.dumps({"data": {"model_source": model_source}}))


def _setup(tmp_path: Path) -> tuple[PrepareConfig, list[str], Path]:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text((Path(__file__).parents[1] / "conf/recipes/digits-mlp-fp32.yaml").read_text())
    prepare = PrepareConfig(rows=100, recipes=[str(recipe), "digits-mlp-demo.yaml"])
    state = tmp_path / "model.pt"
    state.write_bytes(b"weights v1")
    paths = [str(tmp_path / "fp32"), str(tmp_path / "int8")]
    for entry, path in zip(prepare.recipes, paths, strict=True):
        _write_artifact(Path(path), prepare, entry, _file_sha256(state))
    return prepare, paths, state


def test_nothing_is_stale_when_every_key_matches(tmp_path):
    prepare, paths, state = _setup(tmp_path)
    assert stale_artifacts(prepare, paths, str(state)) == []


def test_a_changed_recipe_text_rebuilds(tmp_path):
    prepare, paths, state = _setup(tmp_path)
    recipe = Path(prepare.recipes[0])
    recipe.write_text(recipe.read_text() + "\n# a changed comment still changes the text\n")
    why = stale_artifacts(prepare, paths, str(state))
    assert len(why) == 1 and why[0].startswith(paths[0])


def test_changed_training_or_leanscore_version_rebuilds(tmp_path):
    prepare, paths, state = _setup(tmp_path)
    assert stale_artifacts(prepare.model_copy(update={"epochs": 3}), paths, str(state))
    assert stale_artifacts(prepare.model_copy(update={"seed": 7}), paths, str(state))
    basis = build_basis(prepare, prepare.recipes[0])
    assert basis["leanscore"] and basis["data_version"]["scikit-learn"]
    other = {**basis, "leanscore": "0.0.0-other"}
    assert build_key(other) != build_key(basis)


def test_a_replaced_or_missing_state_dict_rebuilds(tmp_path):
    prepare, paths, state = _setup(tmp_path)
    state.write_bytes(b"weights v2")
    assert all("another state_dict" in w for w in stale_artifacts(prepare, paths, str(state)))
    state.unlink()
    assert stale_artifacts(prepare, paths, str(state)) == [f"no state_dict at {state}"]


def test_a_missing_or_unkeyed_artifact_rebuilds(tmp_path):
    prepare, paths, state = _setup(tmp_path)
    (Path(paths[1]) / "manifest.json").write_text(json.dumps({"data": {}}))
    assert len(stale_artifacts(prepare, paths, str(state))) == 1
    (Path(paths[1]) / "manifest.json").unlink()
    assert stale_artifacts(prepare, paths, str(state)) == [f"{paths[1]}: no artifact"]
