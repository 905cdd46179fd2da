"""Launch-time resource choices in the catalog (pure logic: docs/choices.md)."""

from __future__ import annotations

import pytest
import yaml

from jupyter_tfenv.catalog.choices import ChoiceError, apply_choices
from jupyter_tfenv.catalog.loading import TFEnvCatalog
from jupyter_tfenv.catalog.validation import environment_from_dict
from jupyter_tfenv.errors import CatalogError

GPU_IMAGE = "tensorflow/tensorflow:2.20.0-gpu-jupyter"


def entry(**extra):
    return {"id": "tf-gpu", "image": GPU_IMAGE, **extra}


def test_choices_with_defaults_from_the_entry_and_from_default():
    env = environment_from_dict(
        entry(
            gpus=1,
            resources={"memory": "8g"},
            choices={
                "gpus": [0, 1, 2],
                "memory": ["8g", "16g"],
                "cpus": [2, 4],
                "shm_size": ["1g", "2g"],
                "default": {"shm_size": "2g"},
            },
        )
    )
    assert env.choices is not None
    # gpus and memory from the entry's own values, cpus the first, shm_size the stated one
    assert dict(env.choices.default) == {"gpus": 1, "memory": "8g", "cpus": 2, "shm_size": "2g"}
    summary = env.summary()["choices"]
    assert summary["options"]["memory"] == ["8g", "16g"]
    # The kernelspec carries the entry, choices included; it must round-trip.
    assert environment_from_dict(env.to_config()) == env


def test_an_entry_without_choices_has_none():
    env = environment_from_dict(entry(gpus=1))
    assert env.choices is None and env.summary()["choices"] is None
    assert apply_choices(env, None) is env
    with pytest.raises(ChoiceError, match="offers no choices"):
        apply_choices(env, {"memory": "8g"})


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (
            {"gpus": 1, "choices": {"gpus": [0, 2], "default": {}}},
            "the entry's own gpus (1) is not among the choices (0, 2)",
        ),
        (
            {"choices": {"memory": ["8g", "16g"], "default": {"memory": "4g"}}},
            "default.memory (4g) is not among the choices (8g, 16g)",
        ),
        ({"choices": {"gpus": [0, 1]}}, "GPU counts can be chosen only in an entry"),
        ({"gpus": "all", "choices": {"gpus": [1]}}, "this one has gpus: all"),
        ({"gpus": ["0"], "choices": {"gpus": [1]}}, "by count"),
        ({"choices": {"cpus": [2], "default": {"memory": "8g"}}}, "default.memory"),
        ({"choices": {"memory": ["8g", "8192m"]}}, "listed twice"),
        ({"resources": {"cpus": 3}, "choices": {"cpus": [2, 4]}}, "own cpus (3)"),
    ],
)
def test_invalid_choices_say_what_to_change(extra, words):
    with pytest.raises(CatalogError, match="choices") as err:
        environment_from_dict(entry(**extra))
    assert words in str(err.value)


@pytest.mark.parametrize(
    "choices",
    [
        {},
        {"memory": []},
        {"gpus": [-1]},
        {"cpus": [0]},
        {"memory": ["lots"]},
        {"disk": ["1g"]},
        {"default": {"gpus": "two"}},
    ],
)
def test_the_schema_refuses_malformed_choices(choices):
    with pytest.raises(CatalogError, match="choices"):
        environment_from_dict(entry(gpus=1, choices=choices))


def test_apply_choices_checks_and_applies():
    env = environment_from_dict(
        entry(
            gpus=1,
            resources={"memory": "8g", "cpus": 2},
            choices={"gpus": [0, 1, 2], "memory": ["8g", "16g"], "cpus": [2, 4]},
        )
    )
    default = apply_choices(env, None)
    assert (default.gpus, default.memory, default.cpus) == (1, 8 * 1024**3, 2.0)
    assert default.chosen == {"gpus": 1, "memory": "8g", "cpus": 2}
    big = apply_choices(env, {"gpus": 2, "memory": "16G", "cpus": 4})
    assert (big.gpus, big.memory, big.cpus) == (2, 16 * 1024**3, 4.0)
    assert big.chosen["memory"] == "16g"  # as the catalog wrote it
    none = apply_choices(env, {"gpus": 0})
    assert none.gpus == "none" and not none.wants_gpu
    with pytest.raises(ChoiceError) as err:
        apply_choices(env, {"memory": "32g"})
    assert "choose one of 8g, 16g" in str(err.value) and err.value.http_status == 400
    with pytest.raises(ChoiceError, match="'shm_size' cannot be chosen"):
        apply_choices(env, {"shm_size": "1g"})
    with pytest.raises(ChoiceError, match="choose one of 0, 1, 2"):
        apply_choices(env, {"gpus": "many"})


def test_catalog_wide_limits_leave_an_entry_out(tmp_path):
    path = tmp_path / "catalog.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "environments": [
                    entry(gpus=1, choices={"gpus": [1, 2, 4], "memory": ["8g", "64g"]}),
                    {"id": "small", "image": GPU_IMAGE, "choices": {"memory": ["8g"]}},
                ]
            }
        )
    )
    catalog = TFEnvCatalog(catalog_files=[str(path)], choice_limits={"gpus": 2, "memory": "32g"})
    assert [e.id for e in catalog.all()] == ["small"]
    (problem,) = catalog.problems()
    assert problem.entry == "'tf-gpu'" and problem.field == "choices"
    assert "4 is above the catalog's limit of 2" in problem.message
    catalog.choice_limits = {"gpus": 4, "memory": "64g"}
    assert sorted(e.id for e in catalog.all()) == ["small", "tf-gpu"]
