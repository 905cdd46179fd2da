"""Bit-for-bit builds (issue 21): the same derived entry built on the main Docker engine and
on a second dockerd with its own data root (a teammate's machine) gives the same image id,
and pushing either gives the same digest; a changed pin gives another id. The image,
made by hand (:mod:`jupyter_tfenv.backends.docker.layers`), runs a real kernel, and the
build's check (the image's Python sees every pin) still refuses a build it does not see.

Real wheels from PyPI (skipped with the reason when it cannot be reached), the real local
registry (tests/support/registry.py). Every image is tagged under this module's prefix
and removed at the end.
"""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from jupyter_tfenv.backends.docker import layers
from tests.backends.test_build import IMPORTS, PINS, _build, _cli, _write_catalog, pypi  # noqa: F401
from tests.conftest import CATALOG, PY_IMAGE, run_code
from tests.conftest import start_kernel as start_kernel_rest
from tests.support.gpu_engine import TestEngine
from tests.support.registry import Registry, RegistryCleanup, registry, registry_cleanup  # noqa: F401

pytestmark = pytest.mark.docker

PREFIX = f"tfenv-pytest-repro-{uuid.uuid4().hex[:8]}"
ENTRY = {"id": "repro", "base": "py", "pip": PINS, "repository": f"{PREFIX}/repro"}
BASE = {"id": "py", "image": PY_IMAGE}
FACTS = {"six": "1.16.0", "tomli": "2.0.1", "yaml": "6.0.2", "libyaml": True}


def _remove_prefix_images(client: docker.DockerClient) -> None:
    for image in client.images.list():
        for tag in image.tags:
            if tag.startswith(PREFIX):
                client.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def second_engine(images: docker.DockerClient) -> Iterator[TestEngine]:
    """A teammate's engine: a dockerd with its own data root, the base image loaded."""
    engine = TestEngine()
    try:
        engine.start()
        engine.load_image(images, PY_IMAGE)
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="module")
def twice(
    images: docker.DockerClient,
    pypi: None,  # noqa: F811
    second_engine: TestEngine,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    """The entry built here (resolved now), then there from the committed lock file with a
    wheel cache of its own (its wheels downloaded again, the base's config read with
    docker save there)."""
    root = tmp_path_factory.mktemp("repro")
    mine = _write_catalog(root / "mine", [BASE, ENTRY])
    try:
        [here] = _build(mine, root / "my-wheels", "repro")["built"]
        theirs = _write_catalog(root / "theirs", [BASE, ENTRY])
        (theirs.parent / "tfenv-lock.json").write_text(
            (mine.parent / "tfenv-lock.json").read_text()
        )
        [there] = _build(theirs, root / "their-wheels", "repro", host=second_engine.url)["built"]
        yield {"root": root, "mine": mine, "theirs": theirs, "here": here, "there": there}
    finally:
        _remove_prefix_images(images)


def test_two_engines_give_the_same_image_id(
    twice: dict[str, Any], images: docker.DockerClient, second_engine: TestEngine
) -> None:
    here, there = twice["here"], twice["there"]
    assert here["already_built"] is False and there["already_built"] is False
    assert here["image"] == there["image"]
    assert here["image_id"] == there["image_id"], (
        "the same entry built on two engines gave two image ids: the build is not bit for bit"
    )
    assert second_engine.client is not None
    assert second_engine.client.images.get(there["image"]).id == images.images.get(here["image"]).id
    # Built again here (--rebuild): the same id again.
    [again] = _build(twice["mine"], twice["root"] / "my-wheels", "repro", "--rebuild")["built"]
    assert again["already_built"] is False and again["image_id"] == here["image_id"]
    # Both engines' images run, without network, as the kernel user: every pin imports.
    for client in (images, second_engine.client):
        out = client.containers.run(
            here["image"], ["python3", "-c", IMPORTS], network_mode="none", remove=True, user="1000"
        )
        assert json.loads(out.decode().strip().splitlines()[-1]) == FACTS


def test_the_layer_is_normalized(
    twice: dict[str, Any], images: docker.DockerClient, tmp_path: Path
) -> None:
    """The image's config: created and the layer's history fixed to the base's creation
    time; its last layer: every entry owned by root with that mtime, no .pyc."""
    image = images.images.get(twice["here"]["image"])
    base = images.images.get(PY_IMAGE)
    assert image.attrs["Created"] == base.attrs["Created"]
    assert image.attrs["RootFS"]["Layers"][:-1] == base.attrs["RootFS"]["Layers"]
    assert image.attrs["Config"]["Env"].count("PYTHONPATH=/usr/local/lib/tfenv-packages") == 1
    epoch = layers.epoch_of(base.attrs["Created"])
    saved = tmp_path / "image.tar"
    with saved.open("wb") as handle:
        for chunk in image.save(named=False):
            handle.write(chunk)
    with tarfile.open(saved) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        last = outer.extractfile(manifest[0]["Layers"][-1])
        assert last is not None
        with tarfile.open(fileobj=io.BytesIO(last.read())) as layer:
            members = layer.getmembers()
    names = [m.name.rstrip("/") for m in members]
    assert names[:4] == ["usr", "usr/local", "usr/local/lib", "usr/local/lib/tfenv-packages"]
    assert "usr/local/lib/tfenv-packages/six.py" in names
    assert not [n for n in names if n.endswith(".pyc") or "direct_url.json" in n]
    wrong = [m.name for m in members if (m.uid, m.gid, int(m.mtime)) != (0, 0, epoch)]
    assert not wrong, f"entries not owned by root or not at the base's time: {wrong[:5]}"


def test_pushing_from_both_engines_gives_the_same_digest(
    twice: dict[str, Any],
    second_engine: TestEngine,
    registry: Registry,  # noqa: F811
    registry_cleanup: RegistryCleanup,  # noqa: F811
) -> None:
    """Each engine compresses and uploads its own copy (another repository each): the same
    manifest digest."""
    root = twice["root"]
    pushed = {}
    for who, catalog, host in (
        ("mine", twice["mine"], None),
        ("theirs", twice["theirs"], second_engine.url),
    ):
        under = f"{registry.host}/{registry.prefix}/{who}"
        wheels = root / f"{'my' if who == 'mine' else 'their'}-wheels"
        [result] = _build(catalog, wheels, "repro", "--push", under, host=host)["built"]
        assert result["already_built"] is True and result["digest"].startswith("sha256:")
        registry_cleanup.track(result["pushed"].rpartition(":")[0], result["digest"])
        pushed[who] = result["digest"]
    assert pushed["mine"] == pushed["theirs"], pushed


def test_a_changed_pin_gives_another_id(twice: dict[str, Any]) -> None:
    changed = {**ENTRY, "pip": ["six==1.16.0", "tomli==2.0.0", "pyyaml==6.0.2"]}
    catalog = _write_catalog(twice["root"] / "changed", [BASE, changed])
    [other] = _build(catalog, twice["root"] / "my-wheels", "repro")["built"]
    assert other["image"] != twice["here"]["image"]
    assert other["image_id"] != twice["here"]["image_id"]


def test_the_check_still_refuses_a_build_its_python_does_not_see(
    twice: dict[str, Any], images: docker.DockerClient
) -> None:
    """A base whose interpreter ignores PYTHONPATH (python3 -I): the packages are in the
    image but its Python does not see them; the build fails saying so, and leaves no image."""
    base_ref = f"{PREFIX}/isolated:1"
    context = io.BytesIO()
    dockerfile = (
        f"FROM {PY_IMAGE}\nRUN printf '#!/bin/sh\\nexec python3 -I \"$@\"\\n' "
        "> /usr/local/bin/pyiso && chmod 755 /usr/local/bin/pyiso\n"
    ).encode()
    with tarfile.open(fileobj=context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    context.seek(0)
    images.images.build(  # rm/forcerm: the RUN step's container goes, also on failure
        fileobj=context,
        custom_context=True,
        tag=base_ref,
        network_mode="none",
        rm=True,
        forcerm=True,
    )
    entry = {**ENTRY, "id": "iso", "base": "iso-base", "python": "/usr/local/bin/pyiso"}
    entry["repository"] = f"{PREFIX}/iso"
    catalog = _write_catalog(
        twice["root"] / "isolated", [{"id": "iso-base", "image": base_ref}, entry]
    )
    result = _cli(
        catalog, twice["root"] / "my-wheels", "build", "iso",
        "--wheel-cache", str(twice["root"] / "my-wheels"),
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "does not see the pinned versions" in result.stderr, result.stderr
    assert "six is missing" in result.stderr, result.stderr
    left = images.images.list(filters={"label": f"org.jupyter.tfenv.derived.base={base_ref}"})
    assert not left, f"the refused build left images behind: {[i.id for i in left]}"


class TestKernel:
    """A kernel of the hand-made image, through the real server."""

    @pytest.fixture
    def catalog_path(self, tmp_path: Path, twice: dict[str, Any]) -> Path:
        path = _write_catalog(tmp_path / "kernel-catalog", [*CATALOG, ENTRY])
        (path.parent / "tfenv-lock.json").write_text(
            (twice["mine"].parent / "tfenv-lock.json").read_text()
        )
        return path

    async def test_a_kernel_imports_the_pins(self, jp_fetch: Any, jp_serverapp: Any) -> None:
        kernel_id = await start_kernel_rest(jp_fetch, "tfenv-repro")
        try:
            out = await run_code(jp_serverapp, kernel_id, IMPORTS)
        finally:
            await jp_fetch("api", "kernels", kernel_id, method="DELETE")
        assert json.loads(out.strip().splitlines()[-1]) == FACTS
