"""Catalog loading and validation (pure logic, real files)."""

from __future__ import annotations

import json
import os
import time

import pytest
import yaml

from jupyter_tfenv.catalog.loading import TFEnvCatalog
from jupyter_tfenv.catalog.model import parse_size
from jupyter_tfenv.catalog.validation import environment_from_dict
from jupyter_tfenv.errors import CatalogError, UnknownEnvironmentError


def write(path, environments, **extra):
    path.write_text(yaml.safe_dump({"version": 1, "environments": environments, **extra}))
    return path


def test_valid_entry_with_every_setting():
    env = environment_from_dict(
        {
            "id": "tf220-gpu",
            "image": "tensorflow/tensorflow:2.20.0-gpu-jupyter",
            "gpus": ["0", "GPU-1234"],
            "resources": {"memory": "8g", "cpus": 2.5, "pids": 2048, "shm_size": "512m"},
            "env": {"TF_CPP_MIN_LOG_LEVEL": "2"},
            "mounts": [{"source": "/data", "target": "/data"}],
            "network": "bridge",
        }
    )
    assert env.tensorflow == "2.20.0"  # inferred from the tag
    assert env.display_name == "TensorFlow 2.20.0 (GPU 0,GPU-1234)"
    assert env.memory == 8 * 1024**3 and env.shm_size == 512 * 1024**2
    assert env.mounts[0].read_only is True  # extra mounts are read-only unless asked
    assert env.kernel_name == "tfenv-tf220-gpu"
    # The kernelspec carries the entry; it must round-trip.
    assert environment_from_dict(env.to_config()) == env


def test_display_names_tell_versions_and_cpu_gpu_apart():
    cpu = environment_from_dict({"id": "a", "image": "tensorflow/tensorflow:2.19.0-jupyter"})
    gpu = environment_from_dict(
        {"id": "b", "image": "tensorflow/tensorflow:2.20.0-gpu-jupyter", "gpus": 1}
    )
    assert cpu.display_name == "TensorFlow 2.19.0 (CPU)"
    assert gpu.display_name == "TensorFlow 2.20.0 (1 GPU)"


@pytest.mark.parametrize(
    ("entry", "field", "words"),
    [
        ({"id": "x", "image": "tf:latest"}, "image", "floating tag 'latest'"),
        ({"id": "Bad Id", "image": "tf:1.0"}, "id", "does not match"),
        ({"id": "x"}, "(entry)", "'image' is a required property"),
        ({"id": "x", "image": "tf:1.0", "gpus": "some"}, "gpus", "is not valid"),
        ({"id": "x", "image": "tf:1.0", "gpus": 0}, "gpus", "is not valid"),
        ({"id": "x", "image": "tf:1.0", "resources": {"memory": "lots"}}, "resources.memory", ""),
        ({"id": "x", "image": "tf:1.0", "env": {"JUPYTERHUB_API_TOKEN": "s"}}, "env", ""),
        ({"id": "x", "image": "tf:1.0", "colour": "red"}, "(entry)", "colour"),
        (
            {
                "id": "x",
                "image": "tf:1.0",
                "mounts": [{"source": "/var/run/docker.sock", "target": "/d"}],
            },
            "mounts",
            "Docker socket",
        ),
        (
            {"id": "x", "image": "tf:1.0", "mounts": [{"source": "/", "target": "/host"}]},
            "mounts",
            "host's /",
        ),
        (
            {"id": "x", "image": "tf:1.0", "mounts": [{"source": "/d", "target": "/opt/tfenv/x"}]},
            "mounts",
            "reserved",
        ),
        (
            {"id": "x", "image": "tf:1.0", "mounts": [{"source": "rel", "target": "/d"}]},
            "mounts",
            "absolute",
        ),
    ],
)
def test_invalid_entries_name_the_field(entry, field, words):
    with pytest.raises(CatalogError) as info:
        environment_from_dict(entry)
    assert str(info.value).startswith(f"{field}: ")
    assert words in str(info.value)


def test_bad_entries_are_reported_and_the_others_keep_working(tmp_path):
    path = write(
        tmp_path / "team.yaml",
        [
            {"id": "good", "image": "tensorflow/tensorflow:2.20.0-jupyter"},
            {"id": "floating", "image": "tensorflow/tensorflow:latest"},
            {"id": "nogpu", "image": "tensorflow/tensorflow:2.20.0-jupyter", "gpus": "many"},
            "not a mapping",
            {"id": "good", "image": "tensorflow/tensorflow:2.19.0-jupyter"},
        ],
    )
    catalog = TFEnvCatalog(catalog_files=[str(path)])
    assert [e.id for e in catalog.all()] == ["good"]
    problems = {(p.entry, p.field): p for p in catalog.problems()}
    assert set(problems) == {
        ("'floating'", "image"),
        ("'nogpu'", "gpus"),
        ("#4", ""),
        ("'good'", "id"),
    }
    for problem in problems.values():
        assert problem.source == str(path)
    assert "duplicate id" in problems[("'good'", "id")].message
    assert str(problems[("'floating'", "image")]).startswith(
        f"{path}: environment 'floating': image: "
    )


def test_unreadable_and_malformed_files_are_problems_not_crashes(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("environments: [\n")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"envs": []}))
    good = write(tmp_path / "good.yaml", [{"id": "ok", "image": "tf/tf:2.20.0"}])
    catalog = TFEnvCatalog(
        catalog_files=[str(broken), str(wrong), str(tmp_path / "absent.yaml"), str(good)]
    )
    assert [e.id for e in catalog.all()] == ["ok"]
    messages = {p.source: p.message for p in catalog.problems()}
    assert "not valid YAML" in messages[str(broken)]
    assert "'environments' list" in messages[str(wrong)]
    assert "cannot read" in messages[str(tmp_path / "absent.yaml")]


def test_config_and_env_var_files_merge(tmp_path, monkeypatch):
    team = write(tmp_path / "team.yaml", [{"id": "team", "image": "tf/tf:2.20.0"}])
    monkeypatch.setenv("JUPYTER_TFENV_CATALOG", str(team))
    catalog = TFEnvCatalog(environments=[{"id": "mine", "image": "tf/tf:2.19.0"}])
    assert sorted(e.id for e in catalog.all()) == ["mine", "team"]
    assert catalog.get("team").source == str(team)
    with pytest.raises(UnknownEnvironmentError, match="known: mine, team"):
        catalog.get("nope")


def test_catalog_file_edits_show_up_without_restart(tmp_path):
    path = write(tmp_path / "team.yaml", [{"id": "one", "image": "tf/tf:2.20.0"}])
    catalog = TFEnvCatalog(catalog_files=[str(path)])
    assert [e.id for e in catalog.all()] == ["one"]
    write(path, [{"id": "one", "image": "tf/tf:2.20.0"}, {"id": "two", "image": "tf/tf:2.19.0"}])
    stamp = time.time() + 5
    os.utime(path, (stamp, stamp))  # a different mtime even on coarse clocks
    assert [e.id for e in catalog.all()] == ["one", "two"]


def test_digest_pinning_policy_applies_to_the_catalog(tmp_path):
    digest = "sha256:" + "0" * 64
    path = write(
        tmp_path / "t.yaml",
        [{"id": "tag", "image": "tf/tf:2.20.0"}, {"id": "dig", "image": f"tf/tf@{digest}"}],
    )
    catalog = TFEnvCatalog(catalog_files=[str(path)], pinning="digests")
    assert [e.id for e in catalog.all()] == ["dig"]
    assert "requires digests" in catalog.problems()[0].message


def test_sizes():
    assert parse_size("1g") == 1024**3
    assert parse_size("1.5m") == int(1.5 * 1024**2)
    assert parse_size(4096) == 4096
    with pytest.raises(CatalogError):
        parse_size("big")
