"""The checkpoint helper: the code that reads and deletes inside a storage folder, and
the short-lived container that runs it next to a volume.

For volumes the walk (and a delete) runs in a short-lived container of an environment's
image, as the kernel's uid, with the volume mounted and nothing else: the server may not
be able to read a volume's data itself (NFS, other hosts). The functions shipped into
that container (:data:`_SHIPPED`) use Python 3.6 syntax and the standard library only,
and name nothing but each other and the modules the script imports: their source text
(``inspect.getsource``) is the script (:data:`_HELPER_SCRIPT`). The server runs the same
functions itself for bind roots, so that both ways of reading a folder are the same code.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import json
import os
import stat
from typing import Any

import requests
from docker.errors import APIError, DockerException, ImageNotFound
from docker.types import Mount

from jupyter_tfenv.checkpoints.layout import CheckpointStorageError
from jupyter_tfenv.core.containers import remove_quietly, server_labels, tail_logs
from jupyter_tfenv.core.labels import (
    LABEL_HELPER,
    LABEL_OWNER,
)

HELPER_TIMEOUT = 120.0
HELPER_MEMORY = 512 * 1024**2
HELPER_PIDS = 64


# -- shipped into helper containers: Python 3.6, standard library only ------------------
# These functions are also what the server runs itself for bind roots, so that both ways
# of reading a folder are the same code.


def _prepare_root(root, uid, gid):
    """Hand a root-owned volume root to the kernel user; refuse another user's.

    What is changed is one descriptor, opened without following a symlink, and checked
    again: what is checked is what is changed. (The helper has no CAP_DAC_OVERRIDE: a
    root that is already the user's is only looked at, never opened.)
    """
    info = os.lstat(root)
    if info.st_uid == uid and stat.S_ISDIR(info.st_mode):
        return {"ok": True}
    flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(root, flags | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        return {"error": "cannot open the volume root: " + str(err)}
    try:
        info = os.fstat(fd)
        if info.st_uid == uid:
            return {"ok": True}
        if info.st_uid != 0:
            return {"error": "owner", "uid": info.st_uid}
        try:
            os.fchmod(fd, 0o700)  # first: once it is the user's, root may no longer chmod
            os.fchown(fd, uid, gid)
        except OSError as err:
            return {"error": "cannot chown the volume root: " + str(err)}
        return {"ok": True, "changed": True}
    finally:
        os.close(fd)


def _open_dir(name, dir_fd=None):
    """A folder opened without following a symlink: ``name`` below ``dir_fd``, or, with
    no ``dir_fd``, an absolute path walked from ``/`` one component at a time (a symlink
    anywhere in it is refused: ELOOP or ENOTDIR). The caller closes it."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    if dir_fd is not None:
        return os.open(name, flags, dir_fd=dir_fd)
    fd = os.open("/", flags)
    try:
        for part in name.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                raise OSError(errno.EINVAL, "'..' in a checkpoint root", name)
            child = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_file(name, dir_fd):
    """A regular file below ``dir_fd`` for reading, never through a symlink (and never
    blocking on a FIFO put in its place); None when it is not a regular file."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(name, flags, dir_fd=dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb")


def _zip_complete(source):
    """A zip (.keras) is complete when its end-of-central-directory record is there.

    ``source``: a path, or a file opened for binary reading (read, not closed).
    """

    if isinstance(source, str):
        with open(source, "rb") as handle:
            return _zip_complete(handle)
    size = os.fstat(source.fileno()).st_size
    if size < 22:
        return False
    source.seek(max(0, size - 65557))
    tail = source.read()
    pos = tail.rfind(b"PK\x05\x06")
    if pos < 0 or pos + 22 > len(tail):
        return False
    record = tail[pos : pos + 22]
    cd_size = int.from_bytes(record[12:16], "little")
    cd_offset = int.from_bytes(record[16:20], "little")
    if cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
        return True  # zip64: the record is there, good enough
    return cd_offset + cd_size <= size - len(tail) + pos


def _h5_complete(source):
    """An HDF5 file is complete when it is at least as long as its superblock says.

    None when the superblock is of a kind this does not read. ``source``: a path, or a
    file opened for binary reading (read, not closed).
    """

    if isinstance(source, str):
        with open(source, "rb") as handle:
            return _h5_complete(handle)
    size = os.fstat(source.fileno()).st_size
    source.seek(0)
    head = source.read(128)
    if head[:8] != b"\x89HDF\r\n\x1a\n":
        return False
    version = head[8]
    if version in (0, 1):
        offsets = head[13]
        start = 24 if version == 0 else 28
        base_at, eof_at = start, start + 2 * offsets
    elif version in (2, 3):
        offsets = head[9]
        if version == 3 and head[11] & 0x01:
            return False  # still open for writing (or its writer died)
        base_at, eof_at = 12, 12 + 2 * offsets
    else:
        return None
    if offsets not in (2, 4, 8) or eof_at + offsets > len(head):
        return None
    base = int.from_bytes(head[base_at : base_at + offsets], "little")
    eof = int.from_bytes(head[eof_at : eof_at + offsets], "little")
    return base + eof <= size


def _inventory(root, max_entries=100000, max_depth=32):
    """Every entry under ``root`` (no symlink followed), state files, completeness checks.

    ``entries``: [relative path, "f" | "d" | "l" | "o", size, mtime_ns]. ``state``: the
    text of each file named ``checkpoint`` (TF's state file, up to 64 KiB). ``checks``:
    whether each .keras / .h5 / .hdf5 file looks complete (None: cannot tell).

    Read by descriptor all the way down: ``root`` is walked from ``/`` without following
    a symlink, and every folder and file below is opened relative to its parent's
    descriptor with O_NOFOLLOW, so a folder swapped for a symlink while the walk runs
    leads nowhere else (at most one descriptor per level is open).
    """
    result = {
        "exists": False,
        "entries": [],
        "state": {},
        "checks": {},
        "truncated": False,
    }  # type: dict[str, Any]
    try:
        root_fd = _open_dir(root)
    except OSError:
        return result
    result["exists"] = True

    def walk(fd, rel, depth):
        try:
            names = sorted(os.listdir(fd))
        except OSError:
            return True
        for name in names:
            if len(result["entries"]) >= max_entries:
                result["truncated"] = True
                return False
            path = rel + "/" + name if rel else name
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                kind = "l"
            elif stat.S_ISDIR(st.st_mode):
                kind = "d"
            elif stat.S_ISREG(st.st_mode):
                kind = "f"
            else:
                kind = "o"
            result["entries"].append([path, kind, st.st_size, st.st_mtime_ns])
            if kind == "d":
                if depth + 1 >= max_depth:
                    result["truncated"] = True
                    continue
                try:
                    child = _open_dir(name, fd)
                except OSError:
                    continue
                try:
                    if not walk(child, path, depth + 1):
                        return False
                finally:
                    os.close(child)
            elif kind == "f":
                lower = name.lower()
                wanted = name == "checkpoint" and st.st_size <= 65536
                if not (wanted or lower.endswith((".keras", ".h5", ".hdf5"))):
                    continue
                try:
                    handle = _open_file(name, fd)
                    if handle is None:
                        continue
                    with handle:
                        if wanted:
                            text = handle.read(65537).decode("utf-8", "replace")
                            result["state"][path] = text
                        elif lower.endswith(".keras"):
                            result["checks"][path] = _zip_complete(handle)
                        else:
                            result["checks"][path] = _h5_complete(handle)
                except OSError:
                    if not wanted:
                        result["checks"][path] = None
        return True

    try:
        walk(root_fd, "", 0)
    finally:
        os.close(root_fd)
    return result


def _remove_tree(parent_fd, name, depth=0):
    """Remove the folder ``name`` below ``parent_fd`` and everything in it, by descriptor.

    Each folder is opened with O_NOFOLLOW relative to its parent and emptied through
    that descriptor (``unlink``/``rmdir`` with ``dir_fd``), so a folder swapped for a
    symlink meanwhile is either refused (the open fails) or left as it is: nothing
    outside the tree is ever removed. (``shutil.rmtree`` has no ``dir_fd`` before 3.11.)
    """
    if depth > 256:
        raise OSError(errno.ELOOP, "folders nested too deep", name)
    fd = _open_dir(name, parent_fd)
    try:
        for entry in os.listdir(fd):
            st = os.stat(entry, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                _remove_tree(fd, entry, depth + 1)
            else:
                os.unlink(entry, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)  # a symlink put in its place: ENOTDIR, left alone


def _delete(root, paths):
    """Remove ``paths`` (relative, files or folders) under ``root``; never through a link.

    By descriptor all the way down: ``root`` is walked from ``/`` without following a
    symlink, each parent is opened component by component with O_NOFOLLOW from it, and
    files and folders are removed relative to their parent's descriptor
    (:func:`_remove_tree`), so a folder swapped for a symlink after the listing, or
    while the removal runs, cannot redirect it.
    """
    removed, failed = [], []  # type: list[str], list[list[str]]
    root_fd = _open_dir(root)
    try:
        for rel in sorted(paths, key=lambda p: -p.count("/")):
            parts = rel.split("/")
            if not rel or any(p in ("", ".", "..") for p in parts) or "\0" in rel:
                failed.append([rel, "refused"])
                continue
            fds = [root_fd]
            try:
                for part in parts[:-1]:
                    fds.append(_open_dir(part, fds[-1]))
                parent = fds[-1]
                try:
                    info = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
                except FileNotFoundError:
                    removed.append(rel)  # already gone: nothing left to remove
                    continue
                if stat.S_ISDIR(info.st_mode):
                    _remove_tree(parent, parts[-1])
                else:
                    os.unlink(parts[-1], dir_fd=parent)
                removed.append(rel)
            except OSError as err:
                code = errno.errorcode.get(err.errno or 0, "error")
                failed.append([rel, code])
            finally:
                for fd in fds[1:]:
                    os.close(fd)
        # Folders that the removal left empty go too (never the root itself).
        parents = sorted(
            {"/".join(p.split("/")[:i]) for p in removed for i in range(1, p.count("/") + 1)},
            key=lambda p: -p.count("/"),
        )
        for rel in parents:
            parts = rel.split("/")
            fds = [root_fd]
            try:
                for part in parts[:-1]:
                    fds.append(_open_dir(part, fds[-1]))
                os.rmdir(parts[-1], dir_fd=fds[-1])
            except OSError:
                pass
            finally:
                for fd in fds[1:]:
                    os.close(fd)
    finally:
        os.close(root_fd)
    return {"removed": removed, "failed": failed}


_SHIPPED = (
    _open_dir,
    _open_file,
    _prepare_root,
    _zip_complete,
    _h5_complete,
    _inventory,
    _remove_tree,
    _delete,
)


def _helper_script() -> str:
    # Read once, when the module is imported (below): the source file may be replaced
    # while the server runs (an upgrade), and then it would no longer match the code.
    functions = "\n\n".join(inspect.getsource(f) for f in _SHIPPED)
    names = ", ".join(f.__name__ for f in _SHIPPED)
    return (
        "import contextlib, errno, json, os, shutil, stat, sys\n\n"
        + functions
        + "\n\nargs = json.loads(sys.argv[1])\n"
        + "call = {f.__name__: f for f in ("
        + names
        + ")}[args.pop('call')]\n"
        + "if 'roots' in args:\n"
        + "    roots = args.pop('roots')\n"
        + "    out = [call(r, **args) for r in roots]\n"
        + "else:\n"
        + "    out = call(**args)\n"
        + "sys.stdout.write('TFENV-HELPER ' + json.dumps(out) + '\\n')\n"
    )


_HELPER_SCRIPT = _helper_script()


def run_helper(
    client: Any,
    *,
    image: str,
    python: str,
    volumes: list[str],
    call: str,
    args: dict[str, Any],
    user: str,
    read_only: bool,
    owner: str,
    cap_add: list[str] | None = None,
    timeout: float = HELPER_TIMEOUT,
) -> Any:
    """Run one shipped function in a throwaway container with ``volumes`` at /v/<i>.

    No network, all capabilities dropped (but ``cap_add``), no privilege escalation, a
    read-only root filesystem, small limits, labelled, always removed.
    """
    mounts = [
        Mount(f"/v/{i}", name, type="volume", read_only=read_only) for i, name in enumerate(volumes)
    ]
    spec: dict[str, Any] = {
        "image": image,
        "entrypoint": [python],
        "command": ["-c", _HELPER_SCRIPT, json.dumps({"call": call, **args})],
        "user": user,
        "working_dir": "/",
        "environment": {"PYTHONDONTWRITEBYTECODE": "1"},
        "labels": {
            LABEL_HELPER: call.strip("_"),
            LABEL_OWNER: owner,
            **server_labels(),
        },
        "mounts": mounts,
        "network_mode": "none",
        "cap_drop": ["ALL"],
        "cap_add": cap_add or None,
        "security_opt": ["no-new-privileges:true"],
        "read_only": True,
        "mem_limit": HELPER_MEMORY,
        "pids_limit": HELPER_PIDS,
        "detach": True,
    }
    try:
        container = client.containers.create(**spec)
    except ImageNotFound as err:
        raise CheckpointStorageError(
            f"The image {image} for reading checkpoint volumes is not on this Docker engine; "
            "pull it, or set c.DockerKernelProvisioner.checkpoint_helper_image."
        ) from err
    except APIError as err:
        raise CheckpointStorageError(
            f"Docker refused the checkpoint helper container: {err.explanation or err}."
        ) from err
    try:
        container.start()
        try:
            status = container.wait(timeout=timeout)
        except requests.exceptions.RequestException as err:
            raise CheckpointStorageError(
                f"Reading the checkpoint volume took longer than {timeout:g} s."
            ) from err
        out = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
        for line in reversed(out.splitlines()):
            if line.startswith("TFENV-HELPER "):
                return json.loads(line[len("TFENV-HELPER ") :])
        raise CheckpointStorageError(
            f"The checkpoint helper ({image}, '{python}') exited with code "
            f"{status.get('StatusCode')} and no result: {tail_logs(container, 10).strip()}"
        )
    except (APIError, DockerException) as err:
        raise CheckpointStorageError(
            f"The checkpoint helper container failed: {getattr(err, 'explanation', err)}."
        ) from err
    finally:
        with contextlib.suppress(APIError, DockerException):
            remove_quietly(container)
