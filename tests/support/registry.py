"""A real container registry on loopback for tests (Debian's ``docker-registry``).

Use it in a test module with::

    from tests.support.registry import registry, registry_cleanup  # noqa: F401

- ``registry`` (session): uses the registry that answers at
  ``http://127.0.0.1:$TFENV_REGISTRY_PORT/v2/`` (default port 5000), or starts one with
  ``scripts/start-registry.sh`` (storage in a temporary folder) and stops and removes only
  what it started. Repositories are named under a per-session prefix
  (``registry.repo("py")`` → ``127.0.0.1:5000/tfenv-pytest-1a2b3c4d/py``), so that
  parallel sessions on one registry and Docker engine never touch each other's images.
- ``registry_cleanup`` (function): ``push`` that remembers what it pushed; afterwards
  it deletes the pushed manifests from the registry and removes every local tag and
  digest reference under the session prefix (never anything else, so never the
  ``tfenv-test/*`` originals).
- ``push(client, local_ref, remote_ref) -> digest``: tag and push, return the manifest
  digest from the push stream's final ``aux.Digest``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.errors import APIError, ImageNotFound, NotFound
from docker.utils import parse_repository_tag

REPO = Path(__file__).resolve().parents[2]
START_SCRIPT = REPO / "scripts" / "start-registry.sh"
PORT = int(os.environ.get("TFENV_REGISTRY_PORT", "5000"))
HOST = f"127.0.0.1:{PORT}"
URL = f"http://{HOST}"


def registry_answers(url: str = URL) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/", timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@dataclass
class Registry:
    host: str
    url: str
    prefix: str
    log: Path | None  # the registry's log when this session started it
    started_pid: int | None = None
    workdir: Path | None = None

    def repo(self, name: str) -> str:
        """A repository of this session: ``127.0.0.1:5000/<prefix>/<name>``."""
        return f"{self.host}/{self.prefix}/{name}"

    def owns(self, ref: str) -> bool:
        return ref.startswith(f"{self.host}/{self.prefix}/")

    def path_of(self, repository: str) -> str:
        """``127.0.0.1:5000/p/py`` → ``p/py`` (the name in the registry's API)."""
        assert repository.startswith(self.host + "/"), repository
        return repository[len(self.host) + 1 :]

    def delete_manifest(self, repository: str, digest: str) -> bool:
        request = urllib.request.Request(
            f"{self.url}/v2/{self.path_of(repository)}/manifests/{digest}", method="DELETE"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return bool(response.status == 202)
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return False
            raise

    def manifest_layers(self, repository: str, reference: str) -> list[dict[str, Any]]:
        """The ``layers`` (digest, size) of a manifest, as the registry serves it."""
        request = urllib.request.Request(
            f"{self.url}/v2/{self.path_of(repository)}/manifests/{reference}",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return list(json.load(response)["layers"])

    def blob_bytes_served(self, digest: str) -> list[int]:
        """Bytes written by each completed GET of blob ``digest``, from the registry's log.

        Only known when this session started the registry (``log`` is set); a download
        that the client abandoned shows up as fewer bytes than the blob's size.
        """
        assert self.log is not None
        served = []
        for line in self.log.read_text(errors="replace").splitlines():
            if "response completed" in line and f'/blobs/{digest}"' in line:
                match = re.search(r"http\.response\.written=(\d+)", line)
                if match and "http.request.method=GET" in line:
                    served.append(int(match.group(1)))
        return served

    def tags(self, repository: str) -> list[str]:
        try:
            with urllib.request.urlopen(
                f"{self.url}/v2/{self.path_of(repository)}/tags/list", timeout=10
            ) as response:
                return list(json.load(response).get("tags") or [])
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return []
            raise


def _stop(pid: int, timeout: float = 10.0) -> None:
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[-1].split()[0] == "Z":
                    return
        except OSError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 9)


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    prefix = f"tfenv-pytest-{uuid.uuid4().hex[:8]}"
    if registry_answers():
        yield Registry(host=HOST, url=URL, prefix=prefix, log=None)
        return
    workdir = Path(tempfile.mkdtemp(prefix="tfenv-registry-", dir="/tmp"))
    result = subprocess.run(
        ["bash", str(START_SCRIPT)],
        env={**os.environ, "TFENV_REGISTRY_PORT": str(PORT), "TFENV_REGISTRY_DIR": str(workdir)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail(f"starting the test registry failed:\n{result.stdout}\n{result.stderr}")
    info = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    pid = None if info.get("already_running") else int(info["pid"])
    reg = Registry(
        host=HOST,
        url=URL,
        prefix=prefix,
        log=Path(info["log"]) if pid else None,
        started_pid=pid,
        workdir=workdir if pid else None,
    )
    try:
        yield reg
    finally:
        if pid is not None:
            _stop(pid)
        shutil.rmtree(workdir, ignore_errors=True)


def push(client: docker.DockerClient, local_ref: str, remote_ref: str) -> str:
    """Tag ``local_ref`` as ``remote_ref``, push it, return the manifest digest."""
    repository, tag = parse_repository_tag(remote_ref)
    assert tag and not tag.startswith("sha256:"), f"push needs repo:tag, got {remote_ref}"
    client.images.get(local_ref).tag(repository, tag)
    digest = None
    for event in client.api.push(repository, tag=tag, stream=True, decode=True):
        if event.get("error"):
            raise RuntimeError(f"pushing {remote_ref} failed: {event['error']}")
        aux = event.get("aux") or {}
        if aux.get("Digest"):
            digest = str(aux["Digest"])
    if digest is None:
        raise RuntimeError(f"pushing {remote_ref}: the push stream named no digest")
    return digest


@dataclass
class RegistryCleanup:
    """Pushes that are undone after the test: registry manifests and local references."""

    registry: Registry
    client: docker.DockerClient
    pushed: list[tuple[str, str]] = field(default_factory=list)  # (repository, digest)

    def push(self, local_ref: str, remote_ref: str) -> str:
        assert self.registry.owns(remote_ref), f"{remote_ref} is not under this session"
        digest = push(self.client, local_ref, remote_ref)
        self.pushed.append((parse_repository_tag(remote_ref)[0], digest))
        return digest

    def track(self, repository: str, digest: str) -> None:
        self.pushed.append((repository, digest))

    def local_refs(self) -> list[str]:
        """Every local tag and digest reference under this session's prefix."""
        refs = []
        for image in self.client.images.list(all=True):
            for ref in (image.attrs.get("RepoTags") or []) + (image.attrs.get("RepoDigests") or []):
                if self.registry.owns(ref) and ref not in refs:
                    refs.append(ref)
        return refs

    def cleanup(self) -> None:
        # Tags first, then digest references: removing the last reference of an image that
        # only this test made deletes it; an image with other tags (the tfenv-test/*
        # originals) is only untagged. Never force.
        refs = self.local_refs()
        for ref in sorted(refs, key=lambda r: "@" in r):
            assert self.registry.owns(ref)
            try:
                self.client.images.remove(ref, noprune=False)
            except (ImageNotFound, NotFound):
                pass
            except APIError as err:
                if "conflict" not in str(err).lower():
                    raise
        for repository, digest in dict.fromkeys(self.pushed):
            self.registry.delete_manifest(repository, digest)


@pytest.fixture
def registry_cleanup(registry: Registry, docker_engine: Any) -> Iterator[RegistryCleanup]:
    helper = RegistryCleanup(registry, docker_engine)
    try:
        yield helper
    finally:
        helper.cleanup()


def build_image(
    client: docker.DockerClient, tag: str, base: str, blobs: list[int]
) -> docker.models.images.Image:
    """``FROM base`` plus one layer of random bytes per entry of ``blobs`` (sizes).

    Random bytes do not compress, so each layer really travels. COPY only: no container
    runs, no network.
    """
    files = [(f"blob{i}", os.urandom(size)) for i, size in enumerate(blobs)]
    dockerfile = f"FROM {base}\n" + "".join(f"COPY {name} /{name}\n" for name, _ in files)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in [("Dockerfile", dockerfile.encode()), *files]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    image, _ = client.images.build(
        fileobj=buf, custom_context=True, tag=tag, rm=True, network_mode="none", pull=False
    )
    return image
