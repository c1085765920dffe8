"""A config anywhere names a shipped recipe by its name; a file next to the config wins."""

from __future__ import annotations

import pytest
from leanscore.jobs.compress import load_recipe, recipe_path, shipped_recipes
from leanscore.jobs.config import ConfigError, packaged_config

SHIPPED = packaged_config("recipes")


@pytest.mark.parametrize(
    "written",
    [
        "minilm-dynamic-int8",
        "minilm-dynamic-int8.yaml",
        "recipes/minilm-dynamic-int8.yaml",
        "conf/recipes/minilm-dynamic-int8.yaml",
    ],
)
def test_a_config_outside_the_repository_finds_a_shipped_recipe(tmp_path, written):
    assert recipe_path(written, tmp_path) == SHIPPED / "minilm-dynamic-int8.yaml"
    assert load_recipe(written, tmp_path).name == "minilm-dynamic-int8"


def test_a_file_next_to_the_config_wins_over_the_shipped_recipe(tmp_path):
    own = tmp_path / "minilm-dynamic-int8.yaml"
    own.write_text("name: my-own\nmax_accuracy_drop: 2.0\nsteps:\n  - step: export\n")
    assert recipe_path("minilm-dynamic-int8.yaml", tmp_path) == own
    assert load_recipe("minilm-dynamic-int8.yaml", tmp_path).name == "my-own"


def test_an_unknown_recipe_lists_the_shipped_ones(tmp_path):
    with pytest.raises(ConfigError) as err:
        recipe_path("minilm-dynamic-int4", tmp_path)
    message = str(err.value)
    assert "minilm-dynamic-int4" in message
    assert all(name in message for name in shipped_recipes())
    assert "digits-mlp-demo" in shipped_recipes()


def test_a_path_in_another_folder_is_not_taken_for_a_shipped_name(tmp_path):
    """A missing file under a folder of the user's is an error, not silently the shipped one."""
    with pytest.raises(ConfigError, match="my-recipes/minilm-dynamic-int8.yaml"):
        recipe_path("my-recipes/minilm-dynamic-int8.yaml", tmp_path)
