import pathlib

import pytest

from longcat.rl.recipe import Recipe, load_recipe

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_shipped_recipes_load():
    for path in sorted((ROOT / "rl").glob("*.yaml")):
        assert isinstance(load_recipe(path), Recipe)


def test_unknown_key_is_named():
    with pytest.raises(ValueError, match=r"unknown key 'train\.lrr'"):
        load_recipe({"train": {"lrr": 1e-3}})
    with pytest.raises(ValueError, match=r"unknown key 'bogus'"):
        load_recipe({"bogus": 1})


def test_wrong_type_and_range_are_named():
    with pytest.raises(ValueError, match=r"'rollout.group_size' must be int"):
        load_recipe({"rollout": {"group_size": "eight"}})
    with pytest.raises(ValueError, match=r"'rollout.group_size' must be >= 2"):
        load_recipe({"rollout": {"group_size": 1}})
    with pytest.raises(ValueError, match=r"'algorithm.loss'"):
        load_recipe({"algorithm": {"loss": "ppo"}})


def test_conflicting_keys():
    with pytest.raises(ValueError, match=r"rollout.temperature"):
        load_recipe({"rollout": {"temperature": 0.7}})
    with pytest.raises(ValueError, match=r"rollout.max_concurrent"):
        load_recipe({"train": {"max_staleness": 0, "batch_groups": 8}, "rollout": {"max_concurrent": 4}})
