"""A derived image made bit for bit (issue 21): the same inputs give the same image id on
any Docker engine.

Docker's classic builder stamps the time of the build into the image's config (``created``,
the history) and into its layer (every file's mtime), so two builds of the same entry get
two image ids. :func:`load_image` makes the image by hand instead:

* the packages' folder becomes **one layer tar** (:func:`write_layer`): entries in a fixed
  order (each folder before what it holds, names sorted), every mtime the base image's
  creation time, owner root (0:0, no user or group names), the modes the install left
  (0755/0644), no access or change times; the parent folders (``/usr`` …) carry the base's
  own modes and owners;
* its config (:func:`derived_config`) is the **base's own config bytes** (from a cache
  keyed by the base id, else ``docker save`` of the base) with the new layer's diff id, the
  ``env`` and ``labels`` given, ``created`` and a history entry fixed (the base's creation
  time), and the fields that describe the base's own build container left out;
* ``docker load`` of an archive holding that config and the one new layer: the base's
  layers are named in the manifest but not included, since the engine has them (the base
  image is on it) and ``docker load`` reads a layer's file only for a layer it lacks.

The image id is the sha256 of the config bytes, so it is the same on every engine with the
classic image store (Docker 20.10 and later without the containerd image store).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import docker
from docker.errors import APIError, DockerException

from jupyter_tfenv.backends.docker.wheels import BuildError

#: The fields of a base's config that describe the base's own build (its build container,
#: the Docker version that built it): not the derived image's.
_BUILD_FIELDS = ("container", "container_config", "docker_version", "id", "parent")


def _hex(image_id: str) -> str:
    return image_id.rpartition(":")[2]


class _Chunks(io.RawIOBase):
    """A file object over an iterator of byte chunks (``docker save``'s stream)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._left:
            try:
                self._left = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._left))
        buffer[:size] = self._left[:size]
        self._left = self._left[size:]
        return size


def base_config(client: docker.DockerClient, image_id: str, cache: Path) -> bytes:
    """The raw config bytes of image ``image_id`` (their sha256 is the id): from ``cache``
    (``<cache>/<hex>.json``), else read from ``docker save`` (which streams until the config
    is found) and kept in the cache. Every copy is checked against the id."""
    hex_id = _hex(image_id)
    cached = cache / f"{hex_id}.json"
    try:
        raw = cached.read_bytes()
        if hashlib.sha256(raw).hexdigest() == hex_id:
            return raw
    except OSError:
        pass
    names = {f"{hex_id}.json", f"blobs/sha256/{hex_id}"}  # the classic and the OCI layouts
    raw = b""
    try:
        chunks = client.api.get_image(image_id)
        with tarfile.open(fileobj=io.BufferedReader(_Chunks(iter(chunks))), mode="r|") as tar:
            for member in tar:
                if member.isfile() and member.name.removeprefix("./") in names:
                    handle = tar.extractfile(member)
                    raw = handle.read() if handle is not None else b""
                    if hashlib.sha256(raw).hexdigest() == hex_id:
                        break
    except (APIError, DockerException, tarfile.TarError, OSError) as err:
        raise BuildError(
            f"Reading the config of the base image {image_id[:19]} (docker save) failed: "
            f"{err}. Check that the image is still on the engine."
        ) from err
    if hashlib.sha256(raw).hexdigest() != hex_id:
        raise BuildError(
            f"docker save of the base image {image_id[:19]} holds no config whose sha256 is "
            "its id. Is the engine's image store the containerd one? Derived images are made "
            "for the classic image store."
        )
    remember_config(raw, cache)
    return raw


def remember_config(raw: bytes, cache: Path) -> None:
    """Keep an image's config bytes in ``cache`` (a derived base's, for its children)."""
    cache.mkdir(parents=True, exist_ok=True)
    hex_id = hashlib.sha256(raw).hexdigest()
    tmp = cache / f".{hex_id}.{os.getpid()}.json"
    tmp.write_bytes(raw)
    os.replace(tmp, cache / f"{hex_id}.json")


def epoch_of(created: str | None) -> int:
    """Seconds since 1970 of a config's ``created`` (RFC 3339, any fraction); 0 without one."""
    if not created:
        return 0
    try:
        when = datetime.strptime(created[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return 0
    return max(0, int(when.replace(tzinfo=timezone.utc).timestamp()))


def _info(name: str, kind: bytes, mode: int, mtime: int, *, owner: tuple[int, int] = (0, 0)) -> Any:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = mtime
    info.uid, info.gid = owner
    info.uname = info.gname = ""
    return info


def _entries(folder: Path) -> Iterator[Path]:
    """Every path under ``folder``, each folder before what it holds, names sorted."""
    for child in sorted(folder.iterdir(), key=lambda p: p.name):
        yield child
        if child.is_dir() and not child.is_symlink():
            yield from _entries(child)


def write_layer(
    folder: Path,
    dest: str,
    out: Path,
    *,
    mtime: int,
    parents: dict[str, tuple[int, int, int]] | None = None,
) -> str:
    """Write ``folder`` as a layer tar at ``out``, its content at ``dest`` (absolute), and
    return its diff id (``sha256:…`` of the tar). ``parents`` gives the mode, uid and gid of
    ``dest``'s parent folders in the base (missing: 0755, root)."""
    parents = parents or {}
    root = PurePosixPath(dest)
    with tarfile.open(out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for parent in reversed(root.parents[:-1]):  # /usr, /usr/local, … (not "/")
            mode, uid, gid = parents.get(str(parent), (0o755, 0, 0))
            tar.addfile(
                _info(f"{str(parent)[1:]}/", tarfile.DIRTYPE, mode, mtime, owner=(uid, gid))
            )
        tar.addfile(_info(f"{str(root)[1:]}/", tarfile.DIRTYPE, 0o755, mtime))
        for path in _entries(folder):
            name = str(root / path.relative_to(folder).as_posix())[1:]
            st = path.lstat()
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                info = _info(name, tarfile.SYMTYPE, 0o777, mtime)
                info.linkname = os.readlink(path)
                tar.addfile(info)
            elif stat.S_ISDIR(st.st_mode):
                tar.addfile(_info(f"{name}/", tarfile.DIRTYPE, mode, mtime))
            elif stat.S_ISREG(st.st_mode):
                info = _info(name, tarfile.REGTYPE, mode, mtime)
                info.size = st.st_size
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                raise BuildError(f"{path} is neither a file, a folder nor a link.")
    return f"sha256:{_sha256_file(out)}"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def derived_config(
    base: bytes,
    diff_id: str,
    *,
    env: dict[str, str],
    labels: dict[str, str],
    created_by: str,
) -> bytes:
    """The config of the base (raw bytes) plus one layer: ``env`` set (replacing the
    base's value of a name), ``labels`` added, ``created`` the base's, one history entry.
    Canonical JSON (sorted keys, no spaces): the same inputs give the same bytes."""
    config: dict[str, Any] = json.loads(base)
    for field in _BUILD_FIELDS:
        config.pop(field, None)
    created = str(config.get("created") or "1970-01-01T00:00:00Z")
    inner = dict(config.get("config") or {})
    names = set(env)
    inner["Env"] = [
        *[e for e in inner.get("Env") or [] if e.partition("=")[0] not in names],
        *[f"{k}={v}" for k, v in sorted(env.items())],
    ]
    inner["Labels"] = {**(inner.get("Labels") or {}), **labels}
    config["config"] = inner
    rootfs = dict(config.get("rootfs") or {"type": "layers"})
    rootfs["diff_ids"] = [*(rootfs.get("diff_ids") or []), diff_id]
    config["rootfs"] = rootfs
    config["history"] = [
        *(config.get("history") or []),
        {"created": created, "created_by": created_by, "comment": "jupyter-tfenv"},
    ]
    config["created"] = created
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def load_image(
    client: docker.DockerClient,
    config: bytes,
    layer: Path,
    work: Path,
) -> str:
    """``docker load`` the image of ``config`` whose last layer is the tar ``layer`` (the
    base's layers are on the engine already); returns its id, the config's sha256."""
    parsed = json.loads(config)
    diff_ids = list(parsed["rootfs"]["diff_ids"])
    image_id = f"sha256:{hashlib.sha256(config).hexdigest()}"
    manifest = [
        {
            "Config": f"{_hex(image_id)}.json",
            "RepoTags": None,
            "Layers": [f"{_hex(d)}/layer.tar" for d in diff_ids],
        }
    ]
    archive = work / "image.tar"
    with tarfile.open(archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (
            (f"{_hex(image_id)}.json", config),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            info = _info(name, tarfile.REGTYPE, 0o644, 0)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = _info(f"{_hex(diff_ids[-1])}/layer.tar", tarfile.REGTYPE, 0o644, 0)
        info.size = layer.stat().st_size
        with layer.open("rb") as handle:
            tar.addfile(info, handle)
    layer.unlink()
    try:
        with archive.open("rb") as handle:
            loaded = client.images.load(handle)
    except (APIError, DockerException) as err:
        raise BuildError(
            f"docker load of the derived image failed: {err}. The base image's layers must "
            "be on the engine (is the base image still there?)."
        ) from err
    finally:
        archive.unlink()
    ids = {str(image.id) for image in loaded}
    if image_id not in ids:
        raise BuildError(
            f"docker load made {', '.join(sorted(ids)) or 'no image'}, not {image_id}: the "
            "engine does not name images by their config's digest (the containerd image "
            "store?). Derived images are made for the classic image store."
        )
    return image_id


def pythonpath(image_env: list[str], dest: str) -> str:
    """The derived image's ``PYTHONPATH``: ``dest`` first (a derived base's already names
    it: the packages go into the same folder)."""
    existing = next((e.split("=", 1)[1] for e in image_env if e.startswith("PYTHONPATH=")), "")
    if dest in existing.split(":"):
        return existing
    return dest + (f":{existing}" if existing else "")


@dataclass(frozen=True)
class Recipe:
    """What a derived image is made of besides its packages' folder."""

    base: str  # the base image's id
    dest: str  # where the folder goes (absolute)
    labels: dict[str, str]
    #: The mode, uid and gid of ``dest``'s parent folders in the base.
    parents: dict[str, tuple[int, int, int]]
    count: int  # how many packages


def make_image(
    client: docker.DockerClient, recipe: Recipe, packages: Path, work: Path, cache: Path
) -> str:
    """The image of ``packages`` on the base, bit for bit: one layer tar with fixed times
    and owners, a config of the base's own plus that layer, loaded with ``docker load``;
    its id is the same on every engine. Configs are kept in ``<cache>/image-configs``."""
    configs = cache / "image-configs"
    base = base_config(client, recipe.base, configs)
    parsed = json.loads(base)
    layer = work / "layer.tar"
    diff_id = write_layer(
        packages,
        recipe.dest,
        layer,
        mtime=epoch_of(parsed.get("created")),
        parents=recipe.parents,
    )
    config = derived_config(
        base,
        diff_id,
        env={"PYTHONPATH": pythonpath((parsed.get("config") or {}).get("Env") or [], recipe.dest)},
        labels=recipe.labels,
        created_by=f"jupyter tfenv build: {recipe.count} package(s) into {recipe.dest}",
    )
    image_id = load_image(client, config, layer, work)
    remember_config(config, configs)  # the base of a chain's next build
    return image_id


__all__ = [
    "Recipe",
    "base_config",
    "derived_config",
    "epoch_of",
    "load_image",
    "make_image",
    "pythonpath",
    "remember_config",
    "write_layer",
]
