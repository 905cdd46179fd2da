"""The REST API against its OpenAPI document (``jupyter_tfenv/openapi.yaml``), with schemathesis.

A real ``jupyter_server`` runs in a subprocess on loopback (schemathesis' HTTP client
blocks, so the server cannot share the test's event loop), with a catalog of test images
and kernels that run as uid 1000. Before the fuzzing starts it holds a running tfenv
kernel, a local (non-tfenv) kernel and two finished pulls, and their ids are given to
schemathesis as parameter examples next to the random ids it makes up, so that every
operation is reached with real and with unknown ids.

Checked over every operation: no 5xx, and every documented response conforms to its
schema. At the end the server gets SIGTERM and must leave no container behind.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from tests.conftest import (
    KERNEL_GID,
    KERNEL_UID,
    OWNER,
    OWNER_LABEL,
    PY_IMAGE,
    SERVER_PID_LABEL,
    TF220,
)
from tests.support.server_process import ServerProcess as Server
from tests.support.server_process import ServerStartError, start_tfenv_server

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "jupyter_tfenv" / "openapi.yaml"
PROBE_LABEL = "org.jupyter.tfenv.probe"
TOKEN = "tfenv-openapi-test-token"  # a throwaway token of a loopback server

#: The server's catalog: two images that are here, a GPU request on an engine that may have
#: no NVIDIA runtime, and an image that was never built. None of them is on Docker Hub, so a
#: pull fails (fast, and without changing the local images) whether or not there is a network.
CATALOG: list[dict[str, Any]] = [
    {"id": "py", "image": PY_IMAGE, "display_name": "Python 3.11 (test)"},
    {"id": "tf220", "image": TF220, "tensorflow": "2.20.0"},
    {"id": "gpu", "image": PY_IMAGE, "gpus": "all", "display_name": "GPU (test)"},
    {"id": "missing", "image": "tfenv-test/not-built:9.9.9"},
]
ENV_IDS = [env["id"] for env in CATALOG]

#: Examples per operation in the fuzzing phase (the coverage phase adds its own few).
MAX_EXAMPLES = 15
#: A cold probe of the TensorFlow image imports TensorFlow: seconds, not minutes.
REQUEST_TIMEOUT = 180.0


def start_server(workdir: Path, runtime_root: str) -> Server:
    notebooks = workdir / "notebooks"
    notebooks.mkdir()
    os.chown(notebooks, KERNEL_UID, KERNEL_GID)
    catalog = workdir / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"version": 1, "environments": CATALOG}))
    try:
        return start_tfenv_server(
            workdir,
            token=TOKEN,
            catalog=catalog,
            root_dir=notebooks,
            kernel_uid=KERNEL_UID,
            kernel_gid=KERNEL_GID,
            owner=OWNER,
            runtime_root=runtime_root,
            request_timeout=REQUEST_TIMEOUT,
        )
    except ServerStartError as err:
        pytest.fail(str(err))


def _containers_of(client: docker.DockerClient, pid: int) -> tuple[list[Any], list[Any]]:
    """(kernel containers of this owner, probe containers) labelled with server ``pid``."""
    kernels = client.containers.list(
        all=True, filters={"label": [f"{OWNER_LABEL}={OWNER}", f"{SERVER_PID_LABEL}={pid}"]}
    )
    probes = client.containers.list(
        all=True, filters={"label": [PROBE_LABEL, f"{SERVER_PID_LABEL}={pid}"]}
    )
    return kernels, probes


@dataclass
class Fixtures:
    """Ids that exist on the server, for schemathesis to use next to random ones."""

    tfenv_kernel: str
    local_kernel: str | None
    pulls: list[str]


def _wait_for_pulls(server: Server, pull_ids: list[str], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    for pull_id in pull_ids:
        while True:
            pull = server.request("GET", f"/tfenv/pulls/{pull_id}").json()
            if pull["state"] != "pulling":
                break
            if time.monotonic() > deadline:
                pytest.fail(f"pull {pull_id} still running after {timeout:.0f} s: {pull}")
            time.sleep(0.2)


def _prepare(server: Server) -> Fixtures:
    response = server.request("POST", "/api/kernels", json={"name": "tfenv-py"})
    assert response.status_code == 201, (response.status_code, response.text)
    tfenv_kernel = response.json()["id"]
    local_kernel = None
    if "python3" in server.request("GET", "/api/kernelspecs").json()["kernelspecs"]:
        response = server.request("POST", "/api/kernels", json={"name": "python3"})
        assert response.status_code == 201, (response.status_code, response.text)
        local_kernel = response.json()["id"]
    pulls = []
    for env_id in ("py", "missing"):
        response = server.request("POST", f"/tfenv/environments/{env_id}/pull")
        assert response.status_code == 202, (response.status_code, response.text)
        pulls.append(response.json()["id"])
    _wait_for_pulls(server, pulls)
    # Warm the probe cache of the TensorFlow image once: the fuzzer then never waits for
    # TensorFlow to import unless it asks for ?refresh=1 (which test_api_conforms bounds).
    response = server.request("POST", "/tfenv/environments/tf220/probe")
    assert response.status_code == 200, (response.status_code, response.text)
    return Fixtures(tfenv_kernel, local_kernel, pulls)


@pytest.fixture(scope="module")
def server(images: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    workdir = tmp_path_factory.mktemp("openapi")
    runtime_root = tempfile.mkdtemp(prefix="tfr-", dir="/tmp")  # short: socket paths
    srv = start_server(workdir, runtime_root)
    try:
        fixtures = _prepare(srv)
        yield srv, fixtures
    finally:
        code = srv.stop()
        kernels, probes = _containers_of(images, srv.pid)
        for container in kernels + probes:
            container.remove(force=True)
        shutil.rmtree(runtime_root, ignore_errors=True)
        log = srv.log()
        assert not kernels, (
            f"the server (pid {srv.pid}, exit {code}) left kernel containers behind: "
            f"{[c.name for c in kernels]}\n{log[-4000:]}"
        )
        assert not probes, f"probe containers left behind: {[c.name for c in probes]}"
        assert code is not None, f"the server did not stop on SIGTERM within 60 s\n{log[-4000:]}"


def _load_spec() -> dict[str, Any]:
    return dict(yaml.safe_load(SPEC.read_text(encoding="utf-8")))


def _with_examples(spec: dict[str, Any], examples: dict[str, list[str]]) -> dict[str, Any]:
    """The document with ``examples`` on the shared path parameters (this test's copy only)."""
    spec = copy.deepcopy(spec)
    by_name = {p["name"]: p for p in spec["components"]["parameters"].values()}
    for name, values in examples.items():
        by_name[name]["examples"] = {f"x{i}": {"value": v} for i, v in enumerate(values)}
    return spec


@pytest.fixture(scope="module")
def api_schema(server: tuple[Server, Fixtures]) -> Any:
    _, fixtures = server
    kernels = [fixtures.tfenv_kernel] + ([fixtures.local_kernel] if fixtures.local_kernel else [])
    spec = _with_examples(
        _load_spec(),
        {
            "env_id": [*ENV_IDS, "no-such-env"],
            "kernel_id": [*kernels, "00000000-0000-0000-0000-000000000000"],
            "pull_id": [*fixtures.pulls, "0" * 32],
        },
    )
    return schemathesis.openapi.from_dict(spec)


# -- 1. the document ----------------------------------------------------------------------


def test_openapi_document_is_valid() -> None:
    spec = _load_spec()
    try:
        from openapi_spec_validator import validate
    except ImportError:  # not a dependency; schemathesis' loader validates too
        pass
    else:
        validate(spec)
    schema = schemathesis.openapi.from_path(SPEC)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(
        1 for item in spec["paths"].values() for method in item if method != "parameters"
    )


_HTTP_METHODS = ("get", "post", "put", "patch", "delete")


def _served_operations() -> set[str]:
    """``METHOD /path/{param}`` of every route the extension registers, from its handlers."""
    from jupyter_tfenv.server.app import TFEnvApp
    from jupyter_tfenv.server.handlers.base import TFEnvHandler

    app = TFEnvApp()
    app.initialize_handlers()
    served = set()
    for pattern, handler, *_ in app.handlers:
        path = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern)
        own = [cls for cls in handler.__mro__ if issubclass(cls, TFEnvHandler)]
        for method in _HTTP_METHODS:
            if any(method in vars(cls) for cls in own):
                served.add(f"{method.upper()} {path}")
    return served


def test_every_route_is_documented() -> None:
    """What schemathesis cannot reach: a route the document does not have (or the reverse)."""
    documented = {
        f"{method.upper()} {path}"
        for path, item in _load_spec()["paths"].items()
        for method in item
        if method in _HTTP_METHODS
    }
    served = _served_operations()
    assert not served - documented, f"served but not in openapi.yaml: {sorted(served - documented)}"
    assert not documented - served, f"in openapi.yaml but not served: {sorted(documented - served)}"


# -- 2. the live API against the document -------------------------------------------------

lazy_schema = schemathesis.pytest.from_fixture("api_schema")


@lazy_schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms(case: Any, server: tuple[Server, Fixtures]) -> None:
    srv, _ = server
    if case.method.upper() == "POST" and case.path.endswith("/probe"):
        env_id = (case.path_parameters or {}).get("env_id")
        if env_id == "tf220" and (case.query or {}).get("refresh") not in (None, "0"):
            # A cold TensorFlow probe costs seconds; it is measured once, by the
            # benchmark, not once per generated example.
            case.query = {"refresh": "0"}
    case.call_and_validate(
        base_url=srv.url,
        headers={"Authorization": f"token {TOKEN}"},
        checks=[not_a_server_error, response_schema_conformance],
        timeout=REQUEST_TIMEOUT,
    )
