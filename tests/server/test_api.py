"""The /tfenv/ REST API through a real server: owner 200, forbidden 403, unknown 404, bad 400."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jupyter_server.auth.authorizer import Authorizer
from tornado.httpclient import HTTPClientError
from traitlets.config import Config

from tests.conftest import PY_IMAGE, TF220, kernel_containers, start_kernel

pytestmark = pytest.mark.docker


@pytest.fixture
def jp_server_config(jp_server_config: Config, tmp_path) -> Config:
    jp_server_config.TFEnvApp.probe_cache_dir = str(tmp_path / "probes")
    return jp_server_config


async def get_json(jp_fetch: Any, *path: str, **kwargs: Any) -> Any:
    response = await jp_fetch(*path, **kwargs)
    return json.loads(response.body)


async def error_of(jp_fetch: Any, *path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch(*path, **kwargs)
    assert info.value.response is not None
    return info.value.code, json.loads(info.value.response.body)


async def test_environments_with_image_presence(jp_fetch):
    body = await get_json(jp_fetch, "tfenv", "environments")
    envs = {e["id"]: e for e in body["environments"]}
    assert envs["py"]["image_status"]["present"] is True
    assert envs["missing"]["image_status"]["present"] is False
    assert envs["tf220"]["tensorflow"] == "2.20.0"
    assert any(p["entry"] == "'floating'" for p in body["problems"])
    assert body["pulls"] == {"allowed": True, "message": None}


async def test_unknown_environment_is_404_with_a_message(jp_fetch):
    for path in (
        ("tfenv", "environments", "nope"),
        ("tfenv", "environments", "nope", "image"),
        ("tfenv", "environments", "nope", "probe"),
    ):
        code, body = await error_of(jp_fetch, *path)
        assert code == 404
        assert "No environment 'nope' in the tfenv catalog" in body["message"]


async def test_image_status(jp_fetch, docker_engine):
    body = await get_json(jp_fetch, "tfenv", "environments", "tf220", "image")
    image = docker_engine.images.get(TF220)
    assert body["present"] is True
    assert body["image_id"] == image.id
    assert body["size"] == image.attrs["Size"]
    assert body["created"] == image.attrs["Created"]
    missing = await get_json(jp_fetch, "tfenv", "environments", "missing", "image")
    assert missing["present"] is False and missing["image_id"] is None


async def test_probe_not_probed_then_probed_then_cached(jp_fetch):
    before = await get_json(jp_fetch, "tfenv", "environments", "tf220", "probe")
    assert before == {"state": "not_probed", "environment": "tf220"}
    probed = await get_json(
        jp_fetch, "tfenv", "environments", "tf220", "probe", method="POST", body=""
    )
    assert probed["state"] == "ok"
    assert probed["tensorflow"] == "2.20.0"
    assert probed["build"]["is_cuda_build"] is False
    assert probed["gpus"] == []
    assert probed["cached"] is False
    after = await get_json(jp_fetch, "tfenv", "environments", "tf220", "probe")
    assert after["cached"] is True and after["tensorflow"] == "2.20.0"
    one = await get_json(jp_fetch, "tfenv", "environments", "tf220")
    assert one["probe"]["tensorflow"] == "2.20.0"


async def test_probe_errors_are_clear(jp_fetch):
    code, body = await error_of(
        jp_fetch, "tfenv", "environments", "nopython", "probe", method="POST", body=""
    )
    assert code == 400
    assert "has no 'python3'" in body["message"]
    code, body = await error_of(
        jp_fetch,
        "tfenv",
        "environments",
        "py",
        "probe",
        method="POST",
        body="",
        params={"refresh": "perhaps"},
    )
    assert code == 400
    assert "refresh" in body["message"]


async def test_kernel_status_of_a_running_kernel(jp_fetch, docker_engine):
    kernel_id = await start_kernel(jp_fetch, "tfenv-py")
    try:
        listed = await get_json(jp_fetch, "tfenv", "kernels")
        assert [k["kernel_id"] for k in listed["kernels"]] == [kernel_id]
        body = await get_json(jp_fetch, "tfenv", "kernels", kernel_id)
        (container,) = kernel_containers(docker_engine, kernel_id)
        assert body["environment"]["id"] == "py"
        assert body["environment"]["image"] == PY_IMAGE
        assert body["container_id"] == container.id
        assert body["live"]["status"] == "running"
        assert body["live"]["memory_limit"] == container.attrs["HostConfig"]["Memory"]
        assert body["live"]["memory_used"] > 0
        # Unix sockets in the runtime folder: nothing crosses a network, nothing to say.
        assert (body["encryption"], body["encryption_warning"]) == ("none", None)
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    code, body = await error_of(jp_fetch, "tfenv", "kernels", kernel_id)
    assert code == 404 and kernel_id in body["message"]


async def test_gpu_overview_says_why_there_is_none(jp_fetch):
    body = await get_json(jp_fetch, "tfenv", "gpus")
    if body["state"] == "ok":
        pytest.skip("this host has NVIDIA GPUs; the no-GPU state cannot be shown here")
    assert body["state"] in ("no_driver", "no_nvml_library", "no_gpu")
    assert body["gpus"] == []
    assert body["message"]
    assert body["runtime"]["nvidia"] is False


async def test_unknown_pull_is_404(jp_fetch):
    code, body = await error_of(jp_fetch, "tfenv", "pulls", "no-such-pull")
    assert code == 404 and "no-such-pull" in body["message"]
    assert (await get_json(jp_fetch, "tfenv", "pulls"))["pulls"] == []


async def test_unauthenticated_requests_are_refused(jp_fetch):
    for path in (("tfenv", "environments"), ("tfenv", "gpus"), ("tfenv", "kernels")):
        with pytest.raises(HTTPClientError) as info:
            await jp_fetch(*path, headers={"Authorization": ""})
        assert info.value.code == 403


class ReadOnlyTFEnv(Authorizer):
    """May read tfenv, but not start containers or pulls; everything else allowed."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return resource != "tfenv" or action == "read"


class NoTFEnv(Authorizer):
    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return resource != "tfenv"


@pytest.mark.parametrize("tfenv_authorizer", [ReadOnlyTFEnv])
async def test_read_only_users_cannot_probe_or_pull(jp_fetch):
    assert (await jp_fetch("tfenv", "environments")).code == 200
    for action in ("probe", "pull"):
        code, _ = await error_of(
            jp_fetch, "tfenv", "environments", "py", action, method="POST", body=""
        )
        assert code == 403


@pytest.mark.parametrize("tfenv_authorizer", [NoTFEnv])
async def test_users_without_the_tfenv_permission_get_403(jp_fetch):
    assert (await jp_fetch("api", "kernelspecs")).code == 200
    for path in (
        ("tfenv", "environments"),
        ("tfenv", "environments", "py"),
        ("tfenv", "gpus"),
        ("tfenv", "kernels"),
        ("tfenv", "pulls"),
    ):
        code, _ = await error_of(jp_fetch, *path)
        assert code == 403


def running_py(text: str) -> float:
    """The ``tfenv_kernels_running`` gauge of the ``py`` environment (0 when absent)."""
    for line in text.splitlines():
        if line.startswith('tfenv_kernels_running{environment="py"} '):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_prometheus_metrics_on_the_server_metrics_endpoint(jp_fetch):
    before = running_py((await jp_fetch("metrics")).body.decode())
    kernel_id = await start_kernel(jp_fetch, "tfenv-py")
    try:
        text = (await jp_fetch("metrics")).body.decode()
        assert 'tfenv_kernel_start_seconds_count{environment="py",outcome="ok"}' in text
        assert running_py(text) == before + 1
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert running_py((await jp_fetch("metrics")).body.decode()) == before


async def test_a_kernel_kept_for_the_next_server_leaves_the_running_gauge(
    jp_fetch, jp_serverapp, docker_engine
):
    """A server that keeps its kernels at stop (keep_kernels_on_stop) no longer runs
    them: the gauge counted them for ever (a later test of the same process saw 2)."""
    import logging

    from jupyter_tfenv.lifecycle.keep import detach_kernels

    before = running_py((await jp_fetch("metrics")).body.decode())
    kernel_id = await start_kernel(jp_fetch, "tfenv-py")
    try:
        assert running_py((await jp_fetch("metrics")).body.decode()) == before + 1
        manager = jp_serverapp.kernel_manager
        assert await detach_kernels(manager, lambda env: True, logging.getLogger("t")) == [
            kernel_id
        ]
        assert running_py((await jp_fetch("metrics")).body.decode()) == before
    finally:
        for container in kernel_containers(docker_engine, kernel_id):
            container.remove(force=True)
