"""The panel's Build action as a job (issue 21): ``POST /tfenv/environments/{id}/build``
answers 202 with a build that ``GET /tfenv/builds/{id}`` and its server-sent events follow
through the steps ``jupyter tfenv build`` prints, to ``done`` (with what was built) or
``error`` (with the build's own message). Refusals before a build starts: 404, 400, 403,
409. A real server, the real Docker engine, real wheels from PyPI (skipped, with the
reason, when PyPI cannot be reached); the step mapping is also tested pure.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from jupyter_server.auth import Authorizer
from tornado.httpclient import HTTPClientError

from jupyter_tfenv.server.builds import STEPS, BuildJob, step_of
from tests.conftest import CATALOG

PREFIX = f"tfenv-pytest-buildjob-{uuid.uuid4().hex[:8]}"
#: Built for real (six only: small and pure Python).
SIX = {"id": "ds-six", "base": "py", "pip": ["six==1.16.0"], "repository": f"{PREFIX}/six"}
#: A pin PyPI has no such release of: the build fails in pip, with pip's words.
NO_SUCH = {"id": "ds-none", "base": "py", "pip": ["six==0.0.12345"], "repository": f"{PREFIX}/n"}
#: Its base is an image the engine does not have: refused before it starts.
NO_BASE = {
    "id": "ds-nobase",
    "base": "missing",
    "pip": ["six==1.16.0"],
    "repository": f"{PREFIX}/b",
}


def _pypi_reachable() -> bool:
    try:
        with urllib.request.urlopen("https://pypi.org/simple/six/", timeout=10) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture
def catalog_path(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.yaml"
    entries = [*CATALOG, SIX, NO_SUCH, NO_BASE]
    path.write_text(yaml.safe_dump({"version": 1, "environments": entries}))
    return path


@pytest.fixture(autouse=True)
def _remove_built(images: docker.DockerClient) -> Iterator[None]:
    yield
    for image in images.images.list():
        for tag in image.tags:
            if tag.startswith(PREFIX):
                images.images.remove(tag, force=True)


async def _error(jp_fetch: Any, *path: str, **kwargs: Any) -> tuple[int, str]:
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch(*path, **kwargs)
    assert info.value.response is not None
    return info.value.code, str(json.loads(info.value.response.body)["message"])


def _events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The server-sent events of a finished stream: ``(event, data)`` in order."""
    found = []
    for block in body.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            found.append((lines["event"], json.loads(lines["data"])))
    return found


async def _start(jp_fetch: Any, env_id: str) -> dict[str, Any]:
    reply = await jp_fetch("tfenv", "environments", env_id, "build", method="POST", body="")
    assert reply.code == 202, reply.body
    job = dict(json.loads(reply.body))
    assert reply.headers["Location"].endswith(f"/tfenv/builds/{job['id']}")
    return job


# -- pure: the builder's phases become the panel's steps ------------------------------------


def test_the_builders_phases_map_onto_the_steps_in_order() -> None:
    assert STEPS == ("resolve", "download", "build", "verify", "tag")
    assert [step_of(p) for p in ("target", "resolve", "download", "install", "build")] == [
        "resolve",
        "resolve",
        "download",
        "build",
        "build",
    ]
    assert step_of("push") is None and step_of(None) is None


async def test_a_job_counts_wheels_and_never_steps_back() -> None:
    job = BuildJob("ds", "repo/ds:unbuilt-1")
    job.apply({"phase": "download", "message": "downloading 3 wheel(s)", "done": 1, "total": 3})
    assert job.step == "download" and job.wheels == {"done": 1, "total": 3}
    job.apply({"phase": "build", "message": "Step 1/4 : FROM sha256:abc"})
    # A late 'resolve' line of a chain does not move the step back.
    job.apply({"phase": "resolve", "message": "2 package(s): repo/ds:v2-x"})
    assert job.step == "build" and job.message == "2 package(s): repo/ds:v2-x"
    job.finish("error", "pip said no")
    job.apply({"phase": "tag", "message": "too late"})
    assert job.to_dict()["state"] == "error" and job.message == "pip said no"


# -- refusals before a build starts ------------------------------------------------------


async def test_refusals_before_a_build_starts(jp_fetch: Any) -> None:
    code, message = await _error(
        jp_fetch, "tfenv", "environments", "no-such-env", "build", method="POST", body=""
    )
    assert code == 404 and "no-such-env" in message
    code, message = await _error(
        jp_fetch, "tfenv", "environments", "py", "build", method="POST", body=""
    )
    assert code == 400 and "not a derived environment" in message
    code, message = await _error(
        jp_fetch, "tfenv", "environments", "ds-nobase", "build", method="POST", body=""
    )
    assert code == 409 and "tfenv-test/not-built:9.9.9" in message and "pull it first" in message
    # Nothing was started.
    listed = json.loads((await jp_fetch("tfenv", "builds")).body)
    assert listed == {"builds": []}
    code, message = await _error(jp_fetch, "tfenv", "builds", "0" * 32)
    assert code == 404 and "0" * 32 in message
    code, message = await _error(jp_fetch, "tfenv", "builds", "0" * 32, "events")
    assert code == 404


async def test_the_build_routes_need_a_login(jp_fetch: Any) -> None:
    for path, method in (
        (("tfenv", "builds"), "GET"),
        (("tfenv", "builds", "0" * 32), "GET"),
        (("tfenv", "builds", "0" * 32, "events"), "GET"),
        (("tfenv", "environments", "ds-six", "build"), "POST"),
    ):
        with pytest.raises(HTTPClientError) as info:
            await jp_fetch(
                *path,
                method=method,
                body="" if method == "POST" else None,
                headers={"Authorization": ""},
            )
        assert info.value.code == 403, path


class ReadOnlyTFEnv(Authorizer):
    """May read tfenv (follow builds), not write (start one)."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return resource != "tfenv" or action == "read"


@pytest.mark.parametrize("tfenv_authorizer", [ReadOnlyTFEnv])
async def test_read_only_users_cannot_build(jp_fetch: Any) -> None:
    code, _ = await _error(
        jp_fetch, "tfenv", "environments", "ds-six", "build", method="POST", body=""
    )
    assert code == 403
    assert json.loads((await jp_fetch("tfenv", "builds")).body) == {"builds": []}


# -- real builds -------------------------------------------------------------------------


@pytest.fixture
def pypi() -> None:
    if not _pypi_reachable():
        pytest.skip("PyPI (https://pypi.org) cannot be reached: the build downloads wheels")


async def test_a_build_is_followed_through_its_steps_to_done(
    jp_fetch: Any, pypi: None, images: docker.DockerClient
) -> None:
    job = await _start(jp_fetch, "ds-six")
    assert job["state"] == "building" and job["environment"] == "ds-six"
    assert job["steps"] == list(STEPS)
    # A second Build while it runs gets the same job.
    again = await _start(jp_fetch, "ds-six")
    assert again["id"] == job["id"]
    stream = await jp_fetch("tfenv", "builds", job["id"], "events", request_timeout=600)
    events = _events(stream.body)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "snapshot" and kinds[-1] == "done", kinds
    steps = []
    for _, data in events:
        if data["step"] not in steps:
            steps.append(data["step"])
    assert steps == list(STEPS), f"steps seen in order: {steps}"
    downloading = [d for k, d in events if k == "progress" and d["step"] == "download"]
    assert downloading and downloading[-1]["wheels"]["total"] >= 1, downloading
    final = events[-1][1]
    result = final["result"]
    assert result["already_built"] is False and result["image"].startswith(f"{PREFIX}/six:v2-")
    assert result["packages"][0].startswith("six==1.16.0 --hash=sha256:")
    images.images.get(result["image"])  # it is on the engine
    # The finished job answers as JSON too, and the listing names the built image now.
    done = json.loads((await jp_fetch("tfenv", "builds", job["id"])).body)
    assert done["state"] == "done" and done["result"] == result
    listed = json.loads((await jp_fetch("tfenv", "environments")).body)["environments"]
    six = next(e for e in listed if e["id"] == "ds-six")
    assert six["image"] == result["image"] and six["image_status"]["present"] is True


async def test_a_failed_build_ends_in_error_with_its_own_message(jp_fetch: Any, pypi: None) -> None:
    job = await _start(jp_fetch, "ds-none")
    for _ in range(600):
        state = json.loads((await jp_fetch("tfenv", "builds", job["id"])).body)
        if state["state"] != "building":
            break
        await asyncio.sleep(0.5)
    assert state["state"] == "error", state
    assert "six==0.0.12345" in state["message"] and "pip exit" in state["message"], state
    assert state["result"] is None
    # Late subscribers get the snapshot and the final event.
    events = _events((await jp_fetch("tfenv", "builds", job["id"], "events")).body)
    assert [k for k, _ in events] == ["snapshot", "error"]
    assert events[-1][1]["message"] == state["message"]
