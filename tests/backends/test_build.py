"""`jupyter tfenv build` (issue 21, layers 2 and 3): real wheels from PyPI resolved and
downloaded on the host, a real no-network build on the small python test image, a real
two-level chain, a real kernel of it.

Build-heavy work is done once per module (``built``, ``chain``); the wheel cache is shared
by the module's builds, so only the first one downloads. Tests that need PyPI skip, with
the reason, when it cannot be reached (CI reaches it); the test of a dependency release
uses a local folder of hand-made wheels instead.
"""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from tornado.httpclient import HTTPClientError

from jupyter_tfenv.backends.docker.builder import pushed_reference
from jupyter_tfenv.backends.docker.engine import resolve_image
from jupyter_tfenv.catalog.loading import TFEnvCatalog
from jupyter_tfenv.catalog.validation import environment_from_dict
from jupyter_tfenv.errors import KernelStartError
from tests.conftest import (
    CATALOG,
    KERNEL_UID,
    PY_IMAGE,
    PY_NO_KERNEL_IMAGE,
    run_code,
    run_tfenv_cli,
)
from tests.conftest import start_kernel as start_kernel_rest
from tests.support.gpu_engine import TestEngine
from tests.support.registry import Registry, RegistryCleanup, registry, registry_cleanup  # noqa: F401

pytestmark = pytest.mark.docker

PREFIX = f"tfenv-pytest-derived-{uuid.uuid4().hex[:8]}"
#: Two small pure-Python wheels and one binary one (PyYAML with its C extension).
PINS = ["six==1.16.0", "tomli==2.0.1", "pyyaml==6.0.2"]
DERIVED = {"id": "ds", "base": "py", "pip": PINS, "repository": f"{PREFIX}/ds"}
#: A derived entry on the derived one (a chain): importlib-metadata brings its dependency
#: zipp, which no catalog lists; build resolves it.
PLUS = {
    "id": "ds-plus",
    "base": "ds",
    "pip": ["importlib-metadata==6.8.0"],
    "repository": f"{PREFIX}/plus",
}
CHAIN_IMPORTS = (
    "import json, six, yaml, importlib_metadata, zipp\n"
    "print(json.dumps({'six': six.__version__, 'yaml': yaml.__version__,"
    " 'importlib_metadata': importlib_metadata.version('importlib-metadata'),"
    " 'zipp': importlib_metadata.version('zipp')}))\n"
)
#: Built only by the server's Build action (TestKernel).
ONE_MORE = {"id": "one-more", "base": "py", "pip": ["six==1.16.0"], "repository": f"{PREFIX}/om"}
IMPORTS = (
    "import json, six, tomli, yaml\n"
    "from importlib import metadata\n"
    "print(json.dumps({'six': six.__version__, 'tomli': metadata.version('tomli'),"
    " 'yaml': yaml.__version__, 'libyaml': yaml.__with_libyaml__}))\n"
)


def _pypi_reachable() -> bool:
    try:
        with urllib.request.urlopen("https://pypi.org/simple/six/", timeout=10) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def pypi() -> None:
    if not _pypi_reachable():
        pytest.skip("PyPI (https://pypi.org) cannot be reached: the build downloads wheels")


def _write_catalog(folder: Path, entries: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "catalog.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "environments": entries}))
    return path


def _cli(catalog: Path, cache: Path, *args: str, host: str | None = None) -> Any:
    env = {"JUPYTER_TFENV_KERNEL_UID": str(KERNEL_UID)}  # probes run as the kernel user
    if host:
        env["DOCKER_HOST"] = host
    return run_tfenv_cli(*args, "--catalog", str(catalog), env=env)


def _build(catalog: Path, cache: Path, *args: str, host: str | None = None) -> dict[str, Any]:
    result = _cli(catalog, cache, "build", *args, "--wheel-cache", str(cache), "--json", host=host)
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(json.loads(result.stdout))


def _remove_prefix_images(client: docker.DockerClient) -> None:
    for image in client.images.list():
        for tag in image.tags:
            if tag.startswith(PREFIX):
                client.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def built(
    images: docker.DockerClient, pypi: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("build")
    cache = root / "wheels"
    catalog = _write_catalog(
        root / "team",
        [
            {"id": "py", "image": PY_IMAGE},
            DERIVED,
            PLUS,
            {"id": "loose", "base": "py", "pip": ["six>=1.16"]},
        ],
    )
    try:
        result = _build(catalog, cache, "ds")
        yield {"root": root, "cache": cache, "catalog": catalog, "result": result}
    finally:
        _remove_prefix_images(images)


def _env(entry: dict[str, Any] = DERIVED) -> Any:
    """The entry as a catalog without a lock file sees it: not resolved, not built."""
    base = environment_from_dict({"id": "py", "image": PY_IMAGE})
    return environment_from_dict(entry, bases={"py": base})


def _named(catalog: Path, env_id: str) -> Any:
    """The environment as the catalog names it (its lock file's resolution read)."""
    return TFEnvCatalog(catalog_files=[str(catalog)]).get(env_id)


def _lock(catalog: Path) -> dict[str, Any]:
    return dict(json.loads((catalog.parent / "tfenv-lock.json").read_text()))


@pytest.fixture(scope="module")
def chain(built: dict[str, Any]) -> dict[str, Any]:
    """``ds-plus`` built on ``ds`` (already built: the chain finds it)."""
    result = _build(built["catalog"], built["cache"], "ds-plus")
    return {"result": result}


def test_build_installs_the_pinned_wheels_without_network(
    built: dict[str, Any], images: docker.DockerClient
) -> None:
    [result] = built["result"]["built"]
    assert _env().image.startswith(f"{PREFIX}/ds:unbuilt-")  # before: not resolved
    # The catalog names the built image by the lock file's resolution.
    env = _named(built["catalog"], "ds")
    assert result["image"] == env.image and env.image.startswith(f"{PREFIX}/ds:v2-")
    assert result["already_built"] is False and result["resolved_now"] is True
    assert result["target"]["python"] == "3.11"
    image = images.images.get(env.image)
    base_id = images.images.get(PY_IMAGE).id
    assert image.labels["org.jupyter.tfenv.derived.base-id"] == base_id
    # The lock file beside the catalog records the base's digest (the test image is built
    # locally: its image id) and every wheel's hash; the tag is made of both.
    lock = _lock(built["catalog"])
    record = lock["builds"][env.image]
    assert record["base_image"] == PY_IMAGE and record["image_id"] == image.id
    assert [line.split(" ")[0] for line in record["pip"]] == sorted(PINS)
    assert all(" --hash=sha256:" in line for line in record["pip"])
    resolved = lock["resolved"]["ds"]
    assert resolved["base_digest"] == base_id and resolved["pip"] == record["pip"]
    assert env.image == f"{PREFIX}/ds:{resolved['tag']}"
    out = images.containers.run(
        env.image, ["python3", "-c", IMPORTS], network_mode="none", remove=True, user="1000"
    )
    facts = json.loads(out.decode().strip().splitlines()[-1])
    assert facts == {"six": "1.16.0", "tomli": "2.0.1", "yaml": "6.0.2", "libyaml": True}


def test_same_inputs_same_tag_and_a_changed_pin_a_new_one(
    built: dict[str, Any], images: docker.DockerClient
) -> None:
    catalog, cache = built["catalog"], built["cache"]
    [again] = _build(catalog, cache, "ds")["built"]
    assert again["already_built"] is True and again["resolved_now"] is False
    assert again["image"] == built["result"]["built"][0]["image"]
    [rebuilt] = _build(catalog, cache, "ds", "--rebuild")["built"]
    assert rebuilt["image"] == again["image"]  # the tag is the content, not the build
    # Resolved again (PyPI has not changed these pins' dependencies): the same tag.
    [fresh] = _build(catalog, cache, "ds", "--resolve")["built"]
    assert fresh["resolved_now"] is True and fresh["image"] == again["image"]
    # A changed pin: a new tag, not built yet, and `check` says how to build it and that
    # the lock's old build belongs to no environment any more.
    changed = {**DERIVED, "pip": ["six==1.16.0", "tomli==2.0.0", "pyyaml==6.0.2"]}
    team2 = _write_catalog(built["root"] / "team2", [{"id": "py", "image": PY_IMAGE}, changed])
    (team2.parent / "tfenv-lock.json").write_text((catalog.parent / "tfenv-lock.json").read_text())
    assert _named(team2, "ds").image.startswith(f"{PREFIX}/ds:unbuilt-")
    result = _cli(team2, cache, "check", "--json")
    report = json.loads(result.stdout)
    [problem] = [p for p in report["problems"] if p["entry"] == "'ds'"]
    assert "not built yet" in problem["message"]
    assert "`jupyter tfenv build ds`" in problem["message"]
    assert any(again["image"] in w and "no environment" in w for w in report["warnings"])
    [new] = _build(team2, cache, "ds")["built"]
    assert new["image"] == _named(team2, "ds").image != again["image"]
    out = images.containers.run(
        new["image"], ["python3", "-c", IMPORTS], network_mode="none", remove=True
    )
    assert json.loads(out.decode().strip().splitlines()[-1])["tomli"] == "2.0.0"


def test_an_unpinned_entry_is_refused_with_the_fix(built: dict[str, Any]) -> None:
    result = _cli(built["catalog"], built["cache"], "check", "--offline", "--json")
    report = json.loads(result.stdout)
    [problem] = [p for p in report["problems"] if p["entry"] == "'loose'"]
    assert problem["field"] == "pip"
    assert "'six>=1.16' floats" in problem["message"]
    assert "Pin it exactly, e.g. 'six==1.2.3'" in problem["message"]
    refused = _cli(built["catalog"], built["cache"], "build", "loose")
    assert refused.returncode == 2
    assert "No environment 'loose'" in refused.stderr


def test_a_start_of_an_unbuilt_environment_says_how_to_build_it(
    images: docker.DockerClient,
) -> None:
    env = _env({**DERIVED, "pip": ["six==1.15.0"]})
    with pytest.raises(KernelStartError) as err:
        resolve_image(images, env)
    assert err.value.status_code == 400
    assert "not built yet" in str(err.value) and "`jupyter tfenv build ds`" in str(err.value)


def test_a_moved_base_makes_the_build_stale(
    built: dict[str, Any], images: docker.DockerClient
) -> None:
    base_repo = f"{PREFIX}/base"
    images.images.get(PY_IMAGE).tag(base_repo, "1.0")
    entries = [
        {"id": "base", "image": f"{base_repo}:1.0"},
        {"id": "on-base", "base": "base", "pip": ["six==1.16.0"], "repository": f"{PREFIX}/ob"},
    ]
    catalog = _write_catalog(built["root"] / "moved", entries)
    [first] = _build(catalog, built["cache"], "on-base")["built"]
    assert first["base_digest"] == images.images.get(PY_IMAGE).id
    ok = json.loads(_cli(catalog, built["cache"], "check", "--json").stdout)
    assert not [p for p in ok["problems"] if p["entry"] == "'on-base'"]
    # The base tag is re-pointed at other bits: the derived build is stale.
    images.images.get(PY_NO_KERNEL_IMAGE).tag(base_repo, "1.0")
    report = json.loads(_cli(catalog, built["cache"], "check", "--json").stdout)
    [problem] = [p for p in report["problems"] if p["entry"] == "'on-base'"]
    assert problem["field"] == "base" and "stale build" in problem["message"]
    assert "`jupyter tfenv build on-base`" in problem["message"]
    # Built again: the base's digest is part of the tag, so the same pins give a new tag.
    [second] = _build(catalog, built["cache"], "on-base")["built"]
    assert second["base_digest"] == images.images.get(PY_NO_KERNEL_IMAGE).id
    assert second["image"] != first["image"] and second["resolved_now"] is False
    assert _named(catalog, "on-base").image == second["image"]
    again = json.loads(_cli(catalog, built["cache"], "check", "--json").stdout)
    assert not [p for p in again["problems"] if p["entry"] == "'on-base'"], again


class TestKernel:
    """A kernel of the derived environment, through the real server."""

    @pytest.fixture
    def catalog_path(self, tmp_path: Path, built: dict[str, Any], chain: dict[str, Any]) -> Path:
        path = _write_catalog(tmp_path / "kernel-catalog", [*CATALOG, DERIVED, PLUS, ONE_MORE])
        # The team's lock file: it names the images built (ds and ds-plus).
        lock = _lock(built["catalog"])
        (path.parent / "tfenv-lock.json").write_text(json.dumps(lock))
        return path

    async def test_the_build_action_builds_and_records(
        self, jp_fetch: Any, catalog_path: Path, images: docker.DockerClient
    ) -> None:
        def body(reply: Any) -> dict[str, Any]:
            return dict(json.loads(reply.body))

        listed = body(await jp_fetch("tfenv", "environments"))["environments"]
        before = next(e for e in listed if e["id"] == "one-more")
        assert before["image_status"]["present"] is False
        assert before["image"].startswith(f"{PREFIX}/om:unbuilt-")
        reply = await jp_fetch("tfenv", "environments", "one-more", "build", method="POST", body="")
        # A build job, followed to its end (tests/server/test_build_jobs.py).
        assert reply.code == 202
        events = await jp_fetch("tfenv", "builds", body(reply)["id"], "events", request_timeout=600)
        assert b"event: done" in events.body, events.body[-2000:]
        job = body(await jp_fetch("tfenv", "builds", body(reply)["id"]))
        result = job["result"]
        assert result["already_built"] is False and result["image"].startswith(f"{PREFIX}/om:v2-")
        images.images.get(result["image"])  # it is here now
        lock = json.loads((catalog_path.parent / "tfenv-lock.json").read_text())
        assert lock["builds"][result["image"]]["pip"][0].startswith("six==1.16.0 --hash=")
        # The catalog reads the lock file again: the environment names the built image.
        listed = body(await jp_fetch("tfenv", "environments"))["environments"]
        after = next(e for e in listed if e["id"] == "one-more")
        assert after["image"] == result["image"] and after["image_status"]["present"] is True
        with pytest.raises(HTTPClientError) as err:
            await jp_fetch("tfenv", "environments", "py", "build", method="POST", body="")
        assert err.value.code == 400

    async def test_the_kernel_imports_the_pinned_versions(
        self, jp_fetch: Any, jp_serverapp: Any, built: dict[str, Any]
    ) -> None:
        kernel_id = await start_kernel_rest(jp_fetch, "tfenv-ds")
        try:
            out = await run_code(jp_serverapp, kernel_id, IMPORTS)
        finally:
            await jp_fetch("api", "kernels", kernel_id, method="DELETE")
        facts = json.loads(out.strip().splitlines()[-1])
        assert facts == {"six": "1.16.0", "tomli": "2.0.1", "yaml": "6.0.2", "libyaml": True}

    async def test_a_kernel_of_the_chain_imports_both_levels(
        self, jp_fetch: Any, jp_serverapp: Any, chain: dict[str, Any]
    ) -> None:
        kernel_id = await start_kernel_rest(jp_fetch, "tfenv-ds-plus")
        try:
            out = await run_code(jp_serverapp, kernel_id, CHAIN_IMPORTS)
        finally:
            await jp_fetch("api", "kernels", kernel_id, method="DELETE")
        facts = json.loads(out.strip().splitlines()[-1])
        zipp = _resolved_version(chain, "zipp")
        assert facts == {
            "six": "1.16.0",
            "yaml": "6.0.2",
            "importlib_metadata": "6.8.0",
            "zipp": zipp,
        }


def _resolved_version(chain: dict[str, Any], name: str) -> str:
    result = chain["result"]["built"][-1]
    [line] = [x for x in result["packages"] if x.startswith(f"{name}==")]
    return str(line.split(" ")[0].partition("==")[2])


def test_dependencies_are_resolved_on_the_host_and_locked_with_hashes(
    built: dict[str, Any], chain: dict[str, Any], images: docker.DockerClient
) -> None:
    """ds-plus pins importlib-metadata only: its dependency zipp is resolved, recorded with
    its sha256 in the lock file, and installed; the parent's packages are not installed
    again (the child is built FROM the parent's image)."""
    ds, plus = chain["result"]["built"]
    assert ds["id"] == "ds" and ds["already_built"] is True  # the base first, found
    assert plus["id"] == "ds-plus" and plus["already_built"] is False
    lock = _lock(built["catalog"])
    resolved = lock["resolved"]["ds-plus"]
    names = [line.split("==")[0] for line in resolved["pip"]]
    assert names == ["importlib-metadata", "zipp"], resolved["pip"]
    assert all(len(line.rpartition("sha256:")[2]) == 64 for line in resolved["pip"])
    assert resolved["base_image"] == _named(built["catalog"], "ds").image
    assert resolved["base_digest"] == images.images.get(ds["image"]).id
    assert _named(built["catalog"], "ds-plus").image == plus["image"]
    out = images.containers.run(
        plus["image"], ["python3", "-c", CHAIN_IMPORTS], network_mode="none", remove=True
    )
    facts = json.loads(out.decode().strip().splitlines()[-1])
    assert facts["six"] == "1.16.0" and facts["zipp"] == _resolved_version(chain, "zipp")


def test_a_changed_parent_marks_the_child_stale(
    built: dict[str, Any], chain: dict[str, Any], images: docker.DockerClient
) -> None:
    """The parent of the chain built with another pin (a new parent image): `check` says
    the child's build is stale; building the child builds it FROM the new parent."""
    folder = built["root"] / "chain-changed"
    parent = {**DERIVED, "pip": ["six==1.16.0", "tomli==2.0.0", "pyyaml==6.0.2"]}
    catalog = _write_catalog(folder, [{"id": "py", "image": PY_IMAGE}, DERIVED, PLUS])
    (folder / "tfenv-lock.json").write_text(json.dumps(_lock(built["catalog"])))
    ok = json.loads(_cli(catalog, built["cache"], "check", "--json").stdout)
    assert not [p for p in ok["problems"] if p["entry"] in ("'ds'", "'ds-plus'")], ok
    _write_catalog(folder, [{"id": "py", "image": PY_IMAGE}, parent, PLUS])
    [new_parent] = _build(catalog, built["cache"], "ds")["built"]
    report = json.loads(_cli(catalog, built["cache"], "check", "--json").stdout)
    stale = [p for p in report["problems"] if p["entry"] == "'ds-plus'" and p["field"] == "base"]
    assert len(stale) == 1 and "stale build" in stale[0]["message"], report
    assert new_parent["image"] in stale[0]["message"]
    assert "`jupyter tfenv build ds-plus`" in stale[0]["message"]
    [_, child] = _build(catalog, built["cache"], "ds-plus")["built"]
    assert child["base_image"] == new_parent["image"] and child["image"] != chain_image(chain)
    out = images.containers.run(
        child["image"], ["python3", "-c", IMPORTS], network_mode="none", remove=True
    )
    assert json.loads(out.decode().strip().splitlines()[-1])["tomli"] == "2.0.0"
    # The parent's tag now names other bits (a rebuild elsewhere, retagged): the child's
    # recorded base digest is none of them, so its build is stale again.
    repository, _, tag = new_parent["image"].rpartition(":")
    images.images.get(PY_IMAGE).tag(repository, tag)
    report = json.loads(_cli(catalog, built["cache"], "check", "--json").stdout)
    stale = [p for p in report["problems"] if p["entry"] == "'ds-plus'" and p["field"] == "base"]
    assert len(stale) == 1 and "its base 'ds' was rebuilt" in stale[0]["message"], report


def chain_image(chain: dict[str, Any]) -> str:
    return str(chain["result"]["built"][-1]["image"])


def _wheel(folder: Path, name: str, version: str, requires: list[str]) -> None:
    """A minimal pure-Python wheel (a real one: pip installs it) of module ``name``."""
    dist = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {req}\n" for req in requires
    )
    files = {
        f"{name}/__init__.py": f"__version__ = {version!r}\n",
        f"{dist}/METADATA": metadata,
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as whl:
        for path, text in files.items():
            whl.writestr(path, text)


def test_a_dependency_release_gives_a_new_tag_when_resolved_again(
    tmp_path: Path, images: docker.DockerClient
) -> None:
    """A local index (a folder of hand-made wheels; no PyPI): the pin's dependency gets a
    new release. The lock's resolution keeps the build as it was (the same tag) until the
    set is resolved again, which records the new dependency and a new tag; the old build
    is then flagged by `check`."""
    index = tmp_path / "index"
    index.mkdir()
    _wheel(index, "tfenvapp", "1.0", ["tfenvdep>=1.0"])
    _wheel(index, "tfenvdep", "1.0", [])
    entry = {"id": "app", "base": "py", "pip": ["tfenvapp==1.0"], "repository": f"{PREFIX}/app"}
    catalog = _write_catalog(tmp_path / "team", [{"id": "py", "image": PY_IMAGE}, entry])
    offline = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(index)}
    cache = tmp_path / "wheels"

    def build(*args: str) -> dict[str, Any]:
        result = run_tfenv_cli(
            "build", "app", *args, "--catalog", str(catalog), "--wheel-cache", str(cache),
            "--json", env=offline,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        return dict(json.loads(result.stdout)["built"][0])

    made: list[str] = []
    try:
        first = build()
        made.append(first["image"])
        assert [line.split(" ")[0] for line in first["packages"]] == [
            "tfenvapp==1.0",
            "tfenvdep==1.0",
        ]
        _wheel(index, "tfenvdep", "1.1", [])  # the dependency's new release
        same = build()
        assert same["image"] == first["image"] and same["already_built"] is True
        new = build("--resolve")
        made.append(new["image"])
        assert "tfenvdep==1.1" in [line.split(" ")[0] for line in new["packages"]]
        assert new["image"] != first["image"]
        assert _named(catalog, "app").image == new["image"]
        out = images.containers.run(
            new["image"],
            ["python3", "-c", "import tfenvdep; print(tfenvdep.__version__)"],
            network_mode="none",
            remove=True,
        )
        assert out.decode().strip() == "1.1"
        report = json.loads(_cli(catalog, cache, "check", "--json").stdout)
        assert not [p for p in report["problems"] if p["entry"] == "'app'"], report
        assert any(first["image"] in w and "no environment" in w for w in report["warnings"])
    finally:
        for image in made:
            images.images.remove(image, force=True)


def test_pushed_build_is_pulled_by_digest_on_a_second_engine(
    built: dict[str, Any],
    images: docker.DockerClient,
    registry: Registry,  # noqa: F811
    registry_cleanup: RegistryCleanup,  # noqa: F811
) -> None:
    """A teammate's machine (a dockerd with its own data root): the same catalog entry
    builds to the same tag there, and pulling the pushed build gives the pushed digest,
    which the lock accepts."""
    entry = {"id": "shared", "base": "py", "pip": PINS, "repository": registry.repo("ds")}
    base = {"id": "py", "image": PY_IMAGE}
    mine = _write_catalog(built["root"] / "push-mine", [base, entry])
    [pushed] = _build(mine, built["cache"], "shared", "--push")["built"]
    repository = pushed["image"].rpartition(":")[0]
    registry_cleanup.track(repository, pushed["digest"])
    assert pushed["digest"].startswith("sha256:")
    lock = json.loads((mine.parent / "tfenv-lock.json").read_text())
    assert lock["images"][pushed["image"]]["digest"] == pushed["digest"]

    engine = TestEngine()
    try:
        engine.start()
        engine.load_image(images, PY_IMAGE)
        # Built there from the same entry (and the lock's wheel hashes): the same tag.
        theirs = _write_catalog(built["root"] / "push-theirs", [base, entry])
        (theirs.parent / "tfenv-lock.json").write_text(
            json.dumps({"version": 1, "images": {}, "builds": lock["builds"]})
        )
        [again] = _build(theirs, built["root"] / "their-wheels", "shared", host=engine.url)["built"]
        assert again["image"] == pushed["image"] and again["already_built"] is False
        # Pulled there with the pushed lock: the very digest that was pushed.
        (theirs.parent / "tfenv-lock.json").write_text(json.dumps(lock))
        result = _cli(theirs, built["cache"], "pull", "shared", "--json", host=engine.url)
        assert result.returncode == 0, result.stdout + result.stderr
        assert json.loads(result.stdout)["pulled"][0]["digest"] == pushed["digest"]
        assert engine.client is not None
        local = engine.client.images.get(pushed["image"])
        assert f"{repository}@{pushed['digest']}" in local.attrs["RepoDigests"]
        report = json.loads(_cli(theirs, built["cache"], "check", "--json", host=engine.url).stdout)
        assert not [p for p in report["problems"] if p["entry"] == "'shared'"], report
    finally:
        engine.stop()


def test_the_probe_lists_what_the_build_added_to_its_base(built: dict[str, Any]) -> None:
    result = _cli(built["catalog"], built["cache"], "probe", "ds", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    probe = json.loads(result.stdout)
    assert probe["packages"]["six"] == "1.16.0" and probe["packages"]["pyyaml"] == "6.0.2"
    assert probe["package_changes"]["added"] == {
        "pyyaml": "6.0.2",
        "six": "1.16.0",
        "tomli": "2.0.1",
    }
    assert probe["package_changes"]["removed"] == []
    human = _cli(built["catalog"], built["cache"], "probe", "ds")
    assert "added        pyyaml 6.0.2, six 1.16.0, tomli 2.0.1" in human.stdout, human.stdout


@pytest.mark.parametrize(
    ("pins", "words"),
    [
        # The wheel in the cache is not the one the catalog pinned by hash.
        ([f"six==1.16.0 --hash=sha256:{'0' * 64}"], "none of the catalog's --hash values"),
        # docopt 0.6.2 exists only as a source distribution: nothing is built from source.
        (["docopt==0.6.2"], "source distributions are not built"),
    ],
)
def test_a_build_that_cannot_be_exact_is_refused(
    built: dict[str, Any], pins: list[str], words: str
) -> None:
    entry = {"id": "bad", "base": "py", "pip": pins, "repository": f"{PREFIX}/bad"}
    catalog = _write_catalog(
        built["root"] / f"bad-{len(words)}", [{"id": "py", "image": PY_IMAGE}, entry]
    )
    result = _cli(catalog, built["cache"], "build", "bad", "--wheel-cache", str(built["cache"]))
    assert result.returncode == 2, result.stdout + result.stderr
    assert words in result.stderr, result.stderr
    assert not (catalog.parent / "tfenv-lock.json").exists()


def test_pushed_reference() -> None:
    tag = "v2-0123456789abcdef01234567"
    assert pushed_reference(f"tfenv-derived/ds:{tag}", None) == f"tfenv-derived/ds:{tag}"
    assert (
        pushed_reference(f"tfenv-derived/ds:{tag}", "reg.example.com:5000/team/")
        == f"reg.example.com:5000/team/tfenv-derived/ds:{tag}"
    )
    assert (
        pushed_reference(f"localhost:5000/ml/ds:{tag}", "ghcr.io/acme")
        == f"ghcr.io/acme/ml/ds:{tag}"
    )


def test_push_under_a_registry(
    built: dict[str, Any],
    images: docker.DockerClient,
    registry: Registry,  # noqa: F811
    registry_cleanup: RegistryCleanup,  # noqa: F811
) -> None:
    """`--push REGISTRY`: the same content tag under the registry, locked by digest there."""
    under = f"{registry.host}/{registry.prefix}"
    [result] = _build(built["catalog"], built["cache"], "ds", "--push", under)["built"]
    image = _named(built["catalog"], "ds").image
    tag = image.rpartition(":")[2]
    assert result["pushed"] == f"{under}/{PREFIX}/ds:{tag}"
    registry_cleanup.track(result["pushed"].rpartition(":")[0], result["digest"])
    lock = json.loads((built["catalog"].parent / "tfenv-lock.json").read_text())
    assert lock["images"][result["pushed"]]["digest"] == result["digest"]
    assert lock["builds"][result["pushed"]] == lock["builds"][image]
    assert registry.tags(result["pushed"].rpartition(":")[0]) == [tag]
