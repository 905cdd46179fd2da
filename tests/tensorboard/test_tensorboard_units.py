"""The pure parts of TensorBoards: names, the comparison's environment, mounts, the
hardened spec, the request body, the proxy's paths and headers, the bridge's stand-in."""

from __future__ import annotations

import pytest
from tornado import httputil

from jupyter_tfenv.catalog.validation import environment_from_dict
from jupyter_tfenv.checkpoints.layout import StorageConfig
from jupyter_tfenv.core.labels import LABEL_KERNEL_ID, LABEL_TENSORBOARD
from jupyter_tfenv.tensorboard import bridge
from jupyter_tfenv.tensorboard.container import (
    TensorBoardRequest,
    container_spec,
    log_mounts,
    newest_environment,
    tensorboard_name,
    valid_name,
)
from jupyter_tfenv.tensorboard.manager import TensorBoardRequestError, parse_view
from jupyter_tfenv.tensorboard.proxy import forwarded_headers, upstream_path


def env(id_: str, image: str, **extra: object):
    return environment_from_dict({"id": id_, "image": image, **extra})


def test_names_are_one_per_view():
    assert tensorboard_name("environment", "tf220") == "env-tf220"
    assert tensorboard_name("compare", None) == "compare"
    assert valid_name("env-tf2.20_x-1") and valid_name("compare")
    for bad in ("env-", "env-../x", "Env-tf", "other", "env-a/b", "compare2"):
        assert not valid_name(bad), bad


def test_the_comparison_runs_in_the_newest_tensorflow():
    envs = [
        env("old", "tensorflow/tensorflow:2.9.1-jupyter"),
        env("gpu", "tensorflow/tensorflow:2.20.0-gpu-jupyter", gpus="all"),
        env("cpu", "tensorflow/tensorflow:2.20.0-jupyter"),
        env("mid", "tensorflow/tensorflow:2.19.0-jupyter"),
        env("plain", "python:3.11"),
    ]
    chosen = newest_environment(envs)
    # 2.20 beats 2.9 (numbers, not text), and a CPU image wins over a GPU one.
    assert chosen is not None and chosen.id == "cpu"
    assert newest_environment([env("plain", "python:3.11")]) is None
    tie = [env("b", "tensorflow/tensorflow:2.20.0"), env("a", "tensorflow/tensorflow:2.20.0")]
    assert newest_environment(tie).id == "a"  # type: ignore[union-attr]


def test_log_mounts_are_read_only_and_one_folder_per_environment(tmp_path):
    config = StorageConfig(checkpoint_root=str(tmp_path / "c"), log_root=str(tmp_path / "l"))
    (one,) = log_mounts(config, "alice", "environment", ["tf220"])
    assert one["Target"] == "/tfenv/logs" and one["ReadOnly"] is True
    assert one["Source"] == str(tmp_path / "l" / "alice" / "tf220")
    both = log_mounts(config, "alice", "compare", ["tf219", "tf220"])
    assert [(m["Target"], m["ReadOnly"]) for m in both] == [
        ("/tfenv/logs/tf219", True),
        ("/tfenv/logs/tf220", True),
    ]
    volumes = StorageConfig(mode="volume")
    (vol,) = log_mounts(volumes, "alice", "environment", ["tf220"])
    assert vol["Type"] == "volume" and vol["ReadOnly"] is True
    assert vol["Source"] == "tfenv-logs-alice-tf220"
    assert log_mounts(StorageConfig(mode="off"), "alice", "compare", ["x"]) == []


def test_the_container_is_hardened_and_never_a_kernel(tmp_path):
    request = TensorBoardRequest(
        name="env-tf220",
        view="environment",
        image_env=env("tf220", "tensorflow/tensorflow:2.20.0-jupyter", network="bridge"),
        image_id="sha256:abc",
        environment="tf220",
        owner="alice",
        uid=1000,
        gid=100,
        runtime_dir="/run/tfenv/tb-1",
        log_mounts=tuple(
            log_mounts(StorageConfig(log_root=str(tmp_path)), "alice", "x", ["tf220"])
        ),
        read_only_rootfs=True,
        memory=2**30,
        pids=512,
    )
    spec = container_spec(request)
    assert spec["network_mode"] == "none"  # whatever the entry's network says
    assert spec["cap_drop"] == ["ALL"] and spec["security_opt"] == ["no-new-privileges:true"]
    assert spec["user"] == "1000:100" and spec["read_only"] is True and "/tmp" in spec["tmpfs"]
    assert spec["labels"][LABEL_TENSORBOARD] == "env-tf220"
    assert LABEL_KERNEL_ID not in spec["labels"]
    assert "device_requests" not in spec and spec["environment"]["CUDA_VISIBLE_DEVICES"] == ""
    writable = [m["Target"] for m in spec["mounts"] if not m["ReadOnly"]]
    assert writable == ["/run/tfenv/tb-1"]
    assert "--host" in spec["command"] and spec["command"][spec["command"].index("--host") + 1] == (
        "127.0.0.1"
    )
    with pytest.raises(ValueError):
        container_spec(TensorBoardRequest(**{**request.__dict__, "uid": 0}))


def test_the_request_names_one_view():
    assert parse_view({"environment": "tf220"}) == ("environment", "tf220")
    assert parse_view({"view": "compare"}) == ("compare", None)
    for bad in (
        None,
        [],
        {},
        {"view": "other"},
        {"environment": 3},
        {"view": "compare", "environment": "x"},
    ):
        with pytest.raises(TensorBoardRequestError) as info:
            parse_view(bad)
        assert "compare" in str(info.value)


def test_the_proxy_keeps_the_token_and_credentials_to_itself():
    assert upstream_path("/data/runs", "token=secret&a=1") == "/data/runs?a=1"
    assert upstream_path(None, "") == "/"
    headers = httputil.HTTPHeaders(
        {"Authorization": "token x", "Cookie": "c=1", "Accept": "text/html", "Connection": "close"}
    )
    headers.add("X-XSRF-Protected", "1")
    out = dict(forwarded_headers(headers).get_all())
    assert out == {"Accept": "text/html", "X-Xsrf-Protected": "1"}


def test_the_bridge_stand_in_compares_versions():
    version = bridge._Version
    assert version("0.7.2") >= version("0.4.0")
    assert version("1.10.0") > version("1.9.9")
    assert version("2.0.0rc1") == version("2.0.0")
