"""Grouping a folder's files into checkpoints.

:func:`classify` turns an inventory (:func:`jupyter_tfenv.checkpoints.helper._inventory`)
into the items the API lists: TF checkpoint prefixes (with their ``checkpoint`` state
file, :func:`parse_state`), SavedModel folders, Keras files, partial writes; each with
its size, time, step and an ETag over its files. :func:`public_item` is what a client
sees of one.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from jupyter_tfenv.checkpoints.layout import is_inside
from jupyter_tfenv.core.paths import (
    CONTAINER_CHECKPOINT_DIR,
    CONTAINER_LOG_DIR,
)

_STEP_RE = re.compile(r"(?:^|[-_.])(\d+)$")
_DATA_SHARD_RE = re.compile(r"^(?P<prefix>.+)\.data-(?P<shard>\d{5})-of-(?P<total>\d{5})$")
_TEMP_FILE_RE = re.compile(r"(\.tmp[0-9a-f]*$|\.tempstate\d*$|\.tmp\.)")
_STATE_LINE_RE = re.compile(r'^\s*(\w+)\s*:\s*"((?:[^"\\]|\\.)*)"\s*$')


# -- classifying a folder -----------------------------------------------------------------


def _step_of(stem: str) -> int | None:
    match = _STEP_RE.search(stem)
    return int(match.group(1)) if match else None


def _iso(mtime_ns: int | None) -> str | None:
    if mtime_ns is None:
        return None
    return datetime.fromtimestamp(mtime_ns / 1e9, timezone.utc).isoformat()


@dataclass
class _File:
    path: str
    kind: str
    size: int
    mtime_ns: int


def parse_state(text: str) -> dict[str, Any] | None:
    """TF's ``checkpoint`` state file (a text proto) → latest and all kept prefixes."""
    latest: str | None = None
    kept: list[str] = []
    for line in text.splitlines():
        match = _STATE_LINE_RE.match(line)
        if not match:
            continue
        key, raw = match.groups()
        value = re.sub(r"\\(.)", r"\1", raw)
        if key == "model_checkpoint_path":
            latest = value
        elif key == "all_model_checkpoint_paths":
            kept.append(value)
    if latest is None:
        return None
    if latest not in kept:
        kept.append(latest)
    return {"latest": latest, "kept": kept}


def _prefix_rel(state_dir: str, prefix: str, host_root: str | None) -> str:
    """A prefix from a state file → path relative to the walked root.

    Relative prefixes are relative to the state file's folder (what CheckpointManager
    writes). Absolute ones were written inside a container (``/tfenv/checkpoints/…``) or
    through the notebook mount (the host path): both are mapped back; anything else is
    taken by its file name in the state file's folder, as TF does when a folder moved.
    """
    if not prefix.startswith("/"):
        joined = os.path.normpath(os.path.join(state_dir, prefix)) if state_dir else prefix
        return os.path.normpath(joined)
    for mount in (CONTAINER_CHECKPOINT_DIR, CONTAINER_LOG_DIR, host_root):
        if mount and is_inside(os.path.normpath(prefix), mount) and prefix != mount:
            return os.path.relpath(os.path.normpath(prefix), mount)
    base = prefix.rsplit("/", 1)[-1]
    return f"{state_dir}/{base}" if state_dir else base


def _etag(files: list[_File]) -> str:
    digest = hashlib.sha256()
    for item in sorted(files, key=lambda f: f.path):
        digest.update(f"{item.path}\0{item.kind}\0{item.size}\0{item.mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def _summarize(files: list[_File]) -> tuple[int, int | None]:
    size = sum(f.size for f in files if f.kind == "f")
    mtime = max((f.mtime_ns for f in files), default=None)
    return size, mtime


def _under(path: str, folder: str) -> bool:
    """Whether relative ``path`` is ``folder`` or below it ("" is the walked root)."""
    return not folder or path == folder or path.startswith(folder + "/")


def _dirname(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _series(prefix: str) -> str:
    """``run/ckpt-12`` → ``ckpt``: the name a CheckpointManager numbers its saves under."""
    return re.sub(r"-\d+$", "", _basename(prefix))


def _partial(path: str, files: list[_File]) -> dict[str, Any]:
    size, mtime = _summarize(files)
    return {"prefix": path, "complete": False, "partial": True, "size": size, "mtime": _iso(mtime)}


def classify(inv: dict[str, Any], *, host_root: str | None = None) -> list[dict[str, Any]]:
    """Group an :func:`_inventory` into checkpoints (each a dict the API returns).

    Kinds: ``tf_checkpoint_set`` (a folder with TF's ``checkpoint`` state file: latest
    and every kept checkpoint, step, size, time), ``tf_checkpoint`` (``.index`` +
    ``.data-*`` not named by a state file), ``saved_model``, ``keras``, ``keras_weights``
    (``.weights.h5``), ``keras_h5`` (other ``.h5``), and ``partial`` (temporary files of an
    interrupted save). ``complete`` is False for a save that did not finish.

    An item's ``name`` is the path of the file that defines it (the state file, the
    ``.index``, ``saved_model.pb``, the Keras file, the temporary folder); ``path`` is what
    to show. ``etag`` changes whenever any of its files does. Symlinks are never part of
    an item.
    """
    entries = {e[0]: _File(e[0], e[1], int(e[2]), int(e[3])) for e in inv.get("entries", [])}
    checks: dict[str, bool | None] = inv.get("checks", {})
    claimed_files: set[str] = set()
    claimed_dirs: list[str] = []
    items: list[dict[str, Any]] = []

    def below(folder: str) -> list[_File]:
        return [f for p, f in entries.items() if p != folder and _under(p, folder)]

    def free(path: str) -> bool:
        return path not in claimed_files and not any(_under(path, d) for d in claimed_dirs)

    def claim(files: list[_File], dirs: tuple[str, ...] = ()) -> None:
        claimed_files.update(f.path for f in files)
        claimed_dirs.extend(dirs)

    # Temporary folders of interrupted TF saves (``ckpt-3_temp/part-…``).
    temp_dirs = sorted(p for p, f in entries.items() if f.kind == "d" and p.endswith("_temp"))

    def in_temp(path: str) -> bool:
        return any(path != t and _under(path, t) for t in temp_dirs)

    # SavedModel folders own everything below them (their variables/ is a TF checkpoint).
    for path, entry in sorted(entries.items(), key=lambda kv: kv[0].count("/")):
        if entry.kind != "f" or _basename(path) not in ("saved_model.pb", "saved_model.pbtxt"):
            continue
        if not free(path):
            continue
        folder = _dirname(path)
        files = below(folder)
        has_data = any(_DATA_SHARD_RE.match(_basename(f.path)) for f in files)
        index = f"{folder}/variables/variables.index" if folder else "variables/variables.index"
        size, mtime = _summarize(files)
        items.append(
            {
                "name": path,
                "kind": "saved_model",
                "path": folder,
                "complete": not has_data or index in entries,
                "size": size,
                "mtime": _iso(mtime),
                "step": _step_of(_basename(folder)) if folder else None,
                "_files": files,
                "_remove": [folder] if folder else [f.path for f in files if "/" not in f.path],
            }
        )
        claim(files, (folder,))

    # TF files grouped by prefix.
    prefixes: dict[str, dict[str, Any]] = {}
    for path, entry in entries.items():
        if entry.kind != "f" or not free(path) or in_temp(path):
            continue
        if path.endswith(".index"):
            prefixes.setdefault(path[: -len(".index")], {"index": None, "shards": {}})
            prefixes[path[: -len(".index")]]["index"] = entry
            continue
        match = _DATA_SHARD_RE.match(path)
        if match:
            group = prefixes.setdefault(match["prefix"], {"index": None, "shards": {}})
            group["shards"][int(match["shard"])] = entry
            group["total"] = int(match["total"])

    def prefix_info(prefix: str) -> dict[str, Any]:
        group = prefixes.get(prefix, {"index": None, "shards": {}})
        files = ([group["index"]] if group["index"] else []) + list(group["shards"].values())
        total = group.get("total")
        # Complete: the index and every data shard it was written with. An index without
        # data, or data without an index, is a save that did not finish.
        complete = bool(group["index"]) and total is not None and len(group["shards"]) == total
        size, mtime = _summarize(files)
        return {
            "prefix": prefix,
            "step": _step_of(_basename(prefix)),
            "complete": complete,
            "size": size,
            "mtime": _iso(mtime),
            "shards": {"present": len(group["shards"]), "expected": total},
            "_files": files,
        }

    # Checkpoint sets: one per state file.
    for state_path, text in sorted(inv.get("state", {}).items()):
        state_file = entries.get(state_path)
        if (
            state_file is None
            or state_file.kind != "f"
            or not free(state_path)
            or in_temp(state_path)
        ):
            continue
        state = parse_state(text)
        if state is None:
            continue
        folder = _dirname(state_path)
        kept = list(dict.fromkeys(_prefix_rel(folder, p, host_root) for p in state["kept"]))
        latest = _prefix_rel(folder, state["latest"], host_root)
        infos = sorted(
            (prefix_info(p) for p in kept),
            key=lambda i: (i["step"] is None, i["step"] or 0, i["prefix"]),
        )
        series = {_series(p) for p in kept}
        files = [state_file]
        remove = [state_path]
        for info in infos:
            files += info["_files"]
            remove += [f.path for f in info["_files"]]
        # Leftovers of this set's interrupted saves: prefixes of the same series that the
        # state file does not list, their temporary folders, a half-written state file.
        leftovers = []
        for prefix in sorted(prefixes):
            if prefix not in kept and _dirname(prefix) == folder and _series(prefix) in series:
                info = prefix_info(prefix)
                if all(free(f.path) for f in info["_files"]):
                    leftovers.append(info)
                    files += info["_files"]
                    remove += [f.path for f in info["_files"]]
        for temp in temp_dirs:
            if _dirname(temp) == folder and _series(temp[: -len("_temp")]) in series:
                temp_files = [entries[temp], *below(temp)]
                leftovers.append(_partial(temp, temp_files))
                files += temp_files
                remove.append(temp)
        for path, other in sorted(entries.items()):
            if (
                other.kind == "f"
                and _dirname(path) == folder
                and _basename(path).startswith("checkpoint.tmp")
            ):
                leftovers.append(_partial(path, [other]))
                files.append(other)
                remove.append(path)
        latest_info = next((i for i in infos if i["prefix"] == latest), None)
        size, mtime = _summarize(files)
        items.append(
            {
                "name": state_path,
                "kind": "tf_checkpoint_set",
                "path": folder,
                "complete": bool(latest_info and latest_info["complete"]),
                "size": size,
                "mtime": _iso(mtime),
                "step": latest_info["step"] if latest_info else None,
                "latest": _public(latest_info) if latest_info else None,
                "checkpoints": [_public(i) for i in infos],
                "leftovers": [_public(i) for i in leftovers],
                "_files": files,
                "_remove": remove,
            }
        )
        claim(files, tuple(t for t in temp_dirs if t in remove))

    # TF checkpoints no state file names (Checkpoint.write, or a set's state file is gone).
    for prefix in sorted(prefixes):
        info = prefix_info(prefix)
        if not info["_files"] or not all(free(f.path) for f in info["_files"]):
            continue
        name = f"{prefix}.index" if prefixes[prefix]["index"] else info["_files"][0].path
        files = list(info["_files"])
        remove = [f.path for f in files]
        temp = f"{prefix}_temp"
        if temp in entries and free(temp):
            files += [entries[temp], *below(temp)]
            remove.append(temp)
        size, mtime = _summarize(files)
        items.append(
            {
                "name": name,
                "kind": "tf_checkpoint",
                **_public(info),
                "path": prefix,
                "size": size,
                "mtime": _iso(mtime),
                "_files": files,
                "_remove": remove,
            }
        )
        claim(files, (temp,) if temp in remove else ())

    # Keras files.
    for path, entry in sorted(entries.items()):
        if entry.kind != "f" or not free(path) or in_temp(path):
            continue
        lower = path.lower()
        if lower.endswith(".keras"):
            kind, stem = "keras", _basename(path)[: -len(".keras")]
        elif lower.endswith(".weights.h5"):
            kind, stem = "keras_weights", _basename(path)[: -len(".weights.h5")]
        elif lower.endswith((".h5", ".hdf5")):
            kind, stem = "keras_h5", _basename(path).rsplit(".", 1)[0]
        else:
            continue
        items.append(
            {
                "name": path,
                "kind": kind,
                "path": path,
                "complete": checks.get(path),
                "size": entry.size,
                "mtime": _iso(entry.mtime_ns),
                "step": _step_of(stem),
                "_files": [entry],
                "_remove": [path],
            }
        )
        claim([entry])

    # Whatever an interrupted save left that nothing above claimed.
    for path, entry in sorted(entries.items()):
        if not free(path) or in_temp(path):
            continue
        if (entry.kind == "d" and path in temp_dirs) or (
            entry.kind == "f" and _TEMP_FILE_RE.search(_basename(path))
        ):
            files = [entry, *below(path)] if entry.kind == "d" else [entry]
            size, mtime = _summarize(files)
            items.append(
                {
                    "name": path,
                    "kind": "partial",
                    "path": path,
                    "complete": False,
                    "size": size,
                    "mtime": _iso(mtime),
                    "step": None,
                    "_files": files,
                    "_remove": [path],
                }
            )
            claim(files, (path,) if entry.kind == "d" else ())

    for item in items:
        item["etag"] = _etag(item["_files"])
        item["files"] = len([f for f in item["_files"] if f.kind == "f"])
    items.sort(key=lambda i: i["name"])
    return items


def _public(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if not k.startswith("_")}


def public_item(item: dict[str, Any], *, detail: bool = False) -> dict[str, Any]:
    """An item as the API shows it (with its file list when ``detail``)."""
    data = _public(item)
    if detail:
        data["file_list"] = [
            {"path": f.path, "size": f.size if f.kind == "f" else None, "mtime": _iso(f.mtime_ns)}
            for f in sorted(item["_files"], key=lambda f: f.path)
        ]
    return data
