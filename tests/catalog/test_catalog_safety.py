"""The catalog refuses settings that hand a kernel the host: pure logic, real files.

Each dangerous setting is refused with a ``CatalogError`` that names the field and says what
to do; a catalog file with one bad entry still serves its good ones; the broker's catalog
(the same class, with no opt-in) refuses them too.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from traitlets.config import Config

from jupyter_tfenv.broker.app import TFEnvBroker
from jupyter_tfenv.broker.policy import BrokerError
from jupyter_tfenv.catalog.loading import TFEnvCatalog
from jupyter_tfenv.catalog.validation import catalog_schema, environment_from_dict
from jupyter_tfenv.checkpoints.layout import StorageConfig, locate
from jupyter_tfenv.core.caller import Caller
from jupyter_tfenv.errors import CatalogError

IMAGE = "tensorflow/tensorflow:2.20.0-jupyter"


def entry(**fields: Any) -> dict[str, Any]:
    return {"id": "x", "image": IMAGE, **fields}


def bind(source: str, target: str = "/data", **extra: Any) -> dict[str, Any]:
    return entry(mounts=[{"source": source, "target": target, **extra}])


def volume(name: str, read_only: bool) -> dict[str, Any]:
    return entry(
        mounts=[{"type": "volume", "source": name, "target": "/data", "read_only": read_only}]
    )


def refused(raw: dict[str, Any], field: str, *words: str) -> str:
    with pytest.raises(CatalogError) as info:
        environment_from_dict(raw)
    text = str(info.value)
    assert text.startswith(f"{field}: "), text
    for word in words:
        assert word in text, text
    return text


def schema_errors(raw: dict[str, Any]) -> list[str]:
    validator = Draft202012Validator(
        {"$defs": catalog_schema()["$defs"], "$ref": "#/$defs/environment"}
    )
    return [e.message for e in validator.iter_errors(raw)]


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short folder (socket paths are limited to 107 bytes) with a real engine-named socket."""
    folder = Path(tempfile.mkdtemp(prefix="tfs-", dir="/tmp"))
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(folder / "docker.sock"))
    yield folder
    server.close()
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()


# -- network -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("network", "words"),
    [
        ("host", "host's network namespace"),
        ("HOST", "host's network namespace"),
        ("container:0123456789ab", "joins the namespace"),
        ("container:kernel-of-alice", "joins the namespace"),
        ("ns:/proc/1/ns/net", "joins the namespace"),
        ("service:web", "joins the namespace"),
        ("bad name", "not a Docker network name"),
    ],
)
def test_namespace_sharing_networks_are_refused(network, words):
    text = refused(entry(network=network), "network", words, "Use none")
    assert schema_errors(entry(network=network)), "the schema refuses it too"
    assert network in text


@pytest.mark.parametrize("network", ["none", "bridge", "team-net", "lab.net_2"])
def test_ordinary_networks_are_accepted(network):
    assert environment_from_dict(entry(network=network)).network == network
    assert schema_errors(entry(network=network)) == []


# -- bind sources ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "/var/run",
        "/run",
        "/run/user/1000",
        "/run/containerd",
        "/proc",
        "/proc/1/root",
        "/sys",
        "/sys/fs/cgroup",
        "/dev",
        "/dev/nvidia0",
        "/etc",
        "/etc/shadow",
        "/var/lib/docker",
        "/var/lib/docker/volumes/x/_data",
        "/var/lib/containerd",
        "/etc/../proc",
    ],
)
def test_system_folders_and_below_are_refused(source):
    refused(bind(source), "mounts", "mount #1", "system folder", "refused", "Mount a data folder")


@pytest.mark.parametrize("source", ["/var", "/var/lib", "/var/"])
def test_folders_above_system_folders_are_refused(source):
    refused(bind(source), "mounts", "contains the host's system folder")


@pytest.mark.parametrize(
    "source", ["/data", "/etc-backup", "/variable", "/srv/run", "/opt/datasets", "/home/team"]
)
def test_data_folders_are_accepted(source):
    env = environment_from_dict(bind(source))
    assert env.mounts[0].source == source and env.mounts[0].read_only is True


def test_the_root_and_sockets_stay_refused():
    refused(bind("/"), "mounts", "host's /")
    refused(bind("/var/run/docker.sock"), "mounts", "Docker socket")
    refused(bind("/home/alice/.docker/run/docker.sock"), "mounts", "Docker socket")
    refused(bind("/srv/podman/podman.sock"), "mounts", "socket")
    refused(bind("/run/containerd/containerd.sock"), "mounts", "socket")


def test_a_symlink_to_the_engine_socket_is_refused(tmp_path):
    link = tmp_path / "innocent"
    link.symlink_to("/var/run/docker.sock")
    text = refused(bind(str(link)), "mounts", "resolves to", "refused")
    assert str(link) in text


def test_a_symlink_to_a_system_folder_is_refused(tmp_path):
    for name, target in (("runtime", "/run"), ("config", "/etc"), ("state", "/var/lib/docker")):
        link = tmp_path / name
        link.symlink_to(target)
        refused(bind(str(link)), "mounts", "resolves to", "system folder")
    # A chain of links, and a link to a folder above the system folders.
    (tmp_path / "hop").symlink_to(tmp_path / "runtime")
    refused(bind(str(tmp_path / "hop" / "docker.sock")), "mounts", "refused")
    (tmp_path / "up").symlink_to("/var")
    refused(bind(str(tmp_path / "up")), "mounts", "contains the host's system folder")


def test_a_real_socket_and_its_folder_are_refused_anywhere(sock_dir):
    refused(bind(str(sock_dir / "docker.sock")), "mounts", "Docker socket")
    refused(bind(str(sock_dir)), "mounts", "holds the container engine socket docker.sock")
    link = sock_dir / "link"
    link.symlink_to(sock_dir / "docker.sock")
    refused(bind(str(link)), "mounts", "resolves to", "Docker socket")


def test_the_socket_docker_host_names_is_refused_whatever_its_name(tmp_path, monkeypatch):
    engine = tmp_path / "engine" / "api"
    engine.parent.mkdir()
    engine.write_text("")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{engine}")
    link = tmp_path / "link"
    link.symlink_to(engine)
    refused(bind(str(engine)), "mounts", "socket")
    refused(bind(str(link)), "mounts", "socket")
    refused(bind(str(tmp_path)), "mounts", f"contains the engine socket {engine}")
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    assert environment_from_dict(bind(str(link))).mounts[0].source == str(link)


# -- targets -----------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["/proc", "/proc/sys", "/sys", "/sys/fs/cgroup", "/dev/shm"])
def test_kernel_interfaces_in_the_container_are_refused_as_targets(target):
    refused(bind("/data", target), "mounts", "kernel interfaces", "mount somewhere else")
    assert schema_errors(bind("/data", target))


def test_other_targets_are_accepted():
    for target in ("/data", "/etc/pip.conf", "/devices", "/home/jovyan/data"):
        assert environment_from_dict(bind("/data", target)).mounts[0].target == target


# -- checkpoint volumes ------------------------------------------------------------------


def test_a_read_write_mount_of_a_checkpoint_volume_is_refused():
    config = StorageConfig(mode="volume")
    for kind in ("checkpoints", "logs"):
        name = locate(config, kind, "alice", "tf220").volume
        assert name is not None
        text = refused(volume(name, read_only=False), "mounts", "tfenv-", "read_only: true")
        assert name in text
        assert schema_errors(volume(name, read_only=False))
        # Read-only is the one way to share a checkpoint volume (e.g. a trained model).
        assert environment_from_dict(volume(name, read_only=True)).mounts[0].read_only
    refused(volume("TFENV_anything", read_only=False), "mounts", "tfenv-")


def test_other_volumes_and_volume_paths():
    env = environment_from_dict(volume("pip-cache", read_only=False))
    assert env.mounts[0].source == "pip-cache" and env.mounts[0].read_only is False
    assert environment_from_dict(volume("tfenvdata", read_only=False)).mounts
    refused(volume("/etc", read_only=True), "mounts", "not a Docker volume name", "type bind")


# -- env ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("LD_PRELOAD", "LD_* and PYTHON*"),
        ("LD_LIBRARY_PATH", "LD_* and PYTHON*"),
        ("LD_AUDIT", "LD_* and PYTHON*"),
        ("ld_preload", "LD_* and PYTHON*"),
        ("PYTHONPATH", "Build them into the image"),
        ("PYTHONSTARTUP", "LD_* and PYTHON*"),
        ("PYTHONHOME", "LD_* and PYTHON*"),
        ("PythonUserBase", "LD_* and PYTHON*"),
        ("JUPYTERHUB_API_TOKEN", "JupyterHub"),
        ("JPY_API_TOKEN", "JupyterHub"),
        ("TFENV_ENVIRONMENT", "tfenv"),
        ("NVIDIA_VISIBLE_DEVICES", "use 'gpus'"),
    ],
)
def test_loader_and_interpreter_variables_are_refused(name, words):
    text = refused(entry(env={name: "x"}), "env", name, words)
    assert "refused" in text
    if name == name.upper():
        assert schema_errors(entry(env={name: "x"}))


def test_ordinary_variables_are_accepted():
    env = environment_from_dict(
        entry(env={"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "0"})
    )
    assert env.env == {"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "0"}


# -- a catalog file ----------------------------------------------------------------------


def write_catalog(path: Path, envs: list[Any]) -> Path:
    path.write_text(yaml.safe_dump({"version": 1, "environments": envs}))
    return path


def test_one_dangerous_entry_is_left_out_and_the_good_ones_keep_working(tmp_path):
    link = tmp_path / "sock"
    link.symlink_to("/var/run/docker.sock")
    path = write_catalog(
        tmp_path / "team.yaml",
        [
            {"id": "good", "image": IMAGE, "mounts": [{"source": str(tmp_path), "target": "/d"}]},
            {"id": "hostnet", "image": IMAGE, "network": "host"},
            {"id": "preload", "image": IMAGE, "env": {"LD_PRELOAD": "/x.so"}},
            {"id": "sock", "image": IMAGE, "mounts": [{"source": str(link), "target": "/d"}]},
            {"id": "good2", "image": IMAGE, "network": "bridge"},
        ],
    )
    catalog = TFEnvCatalog(catalog_files=[str(path)])
    assert [e.id for e in catalog.all()] == ["good", "good2"]
    problems = {p.entry: p for p in catalog.problems()}
    assert set(problems) == {"'hostnet'", "'preload'", "'sock'"}
    assert problems["'hostnet'"].field == "network"
    assert problems["'preload'"].field == "env"
    assert problems["'sock'"].field == "mounts"
    for problem in problems.values():
        assert problem.source == str(path)
    assert str(problems["'sock'"]).startswith(f"{path}: environment 'sock': mounts: mount #1: ")


def test_a_symlink_re_pointed_later_takes_its_entry_out_without_a_catalog_edit(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    link = tmp_path / "current"
    link.symlink_to(data)
    path = write_catalog(
        tmp_path / "team.yaml",
        [{"id": "ds", "image": IMAGE, "mounts": [{"source": str(link), "target": "/d"}]}],
    )
    catalog = TFEnvCatalog(catalog_files=[str(path)])
    assert [e.id for e in catalog.all()] == ["ds"]
    link.unlink()
    link.symlink_to("/run")
    assert catalog.all() == []
    assert "resolves to '/run'" in catalog.problems()[0].message
    link.unlink()
    link.symlink_to(data)
    assert [e.id for e in catalog.all()] == ["ds"]


def test_the_broker_refuses_the_same_entries(tmp_path):
    path = tmp_path / "team.json"
    path.write_text(
        json.dumps(
            {
                "environments": [
                    {"id": "ok", "image": IMAGE},
                    {"id": "hostnet", "image": IMAGE, "network": "host"},
                    {"id": "etc", "image": IMAGE, "mounts": [{"source": "/etc", "target": "/e"}]},
                ]
            }
        )
    )
    broker = TFEnvBroker(config=Config({"TFEnvCatalog": {"catalog_files": [str(path)]}}))
    caller = Caller(name="alice", uid=1000, gid=1000, home=str(tmp_path))
    assert broker.environment_for(caller, "ok").id == "ok"
    for env_id in ("hostnet", "etc"):
        with pytest.raises(BrokerError) as info:
            broker.environment_for(caller, env_id)
        assert info.value.http_status == 400
    assert {p.entry for p in broker.get_catalog().problems()} == {"'hostnet'", "'etc'"}
    assert not any(
        "allow" in name or "unsafe" in name or "danger" in name
        for name in broker.get_catalog().trait_names()
    ), "no trait turns these checks off"


def test_a_symlink_to_a_data_folder_is_accepted(tmp_path):
    os.symlink(tmp_path, tmp_path.parent / f"{tmp_path.name}-link")
    try:
        env = environment_from_dict(bind(f"{tmp_path}-link"))
        assert env.mounts[0].source == f"{tmp_path}-link"
    finally:
        os.unlink(f"{tmp_path}-link")
