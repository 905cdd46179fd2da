"""Checkpoint storage without a server: names, templates, containment, listing, deleting.

Pure logic on real folders (``tmp_path``); nothing here needs Docker except where marked.
"""

from __future__ import annotations

import ast
import builtins
import io
import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from jupyter_tfenv.backends.docker.engine import KernelRequest, container_spec
from jupyter_tfenv.catalog.validation import environment_from_dict
from jupyter_tfenv.checkpoints.browser import bind_folder, discover_bind, scan_bind
from jupyter_tfenv.checkpoints.classification import classify, parse_state, public_item
from jupyter_tfenv.checkpoints.helper import (
    _delete,
    _h5_complete,
    _helper_script,
    _inventory,
    _zip_complete,
)
from jupyter_tfenv.checkpoints.layout import (
    CheckpointNotFound,
    CheckpointStorageError,
    StorageConfig,
    check_item_name,
    check_subpath_template,
    check_volume_template,
    escape_path_component,
    escape_volume_part,
    is_inside,
    kernel_environment,
    kernel_locations,
    locate,
    unescape_path_component,
)
from jupyter_tfenv.checkpoints.storage import (
    other_environments,
    prepare_bind,
    prepare_kernel_storage,
)
from jupyter_tfenv.core.paths import CONTAINER_CHECKPOINT_DIR

NAMES = [
    "alice",
    "a/b",
    "a_b",
    "a%2Fb",
    "a%2fb",
    "a%252Fb",
    ".",
    "..",
    ".hidden",
    "x.",
    "a-b",
    "a.b",
    "a b",
    "a\\b",
    "ünï",
    "%",
    "%25",
    "-",
    "_",
    "__",
    "_5f",
    "a\nb",
    "john.doe@example.com",
]


# -- names ------------------------------------------------------------------------------


def test_path_escaping_is_collision_free_and_never_leaves_its_folder():
    escaped = [escape_path_component(n) for n in NAMES]
    assert len(set(escaped)) == len(NAMES)  # injective on the corpus
    for name, text in zip(NAMES, escaped, strict=True):
        assert "/" not in text and "\0" not in text
        assert text not in ("", ".", "..") and not text.startswith(".")
        assert unescape_path_component(text) == name
    assert escape_path_component("a/b") == "a%2Fb"
    assert escape_path_component("a_b") == "a_b"
    assert escape_path_component("..") == "%2E."
    assert escape_path_component("john.doe@example.com") == "john.doe%40example.com"
    # Only canonical spellings stand for a name (a folder made by hand is not one).
    assert unescape_path_component("a%2fb") is None
    assert unescape_path_component("a b") is None
    assert unescape_path_component("%FF") is None
    with pytest.raises(CheckpointStorageError):
        escape_path_component("")
    with pytest.raises(CheckpointStorageError):
        escape_path_component("é" * 200)


def test_volume_escaping_is_collision_free_and_keeps_separators_unforgeable():
    escaped = [escape_volume_part(n) for n in NAMES]
    assert len(set(escaped)) == len(NAMES)
    for text in escaped:
        assert set(text) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
    config = StorageConfig(mode="volume")
    # "a-b" in "c" and "a" in "b-c" would both be "a-b-c" with a naive template.
    one = locate(config, "checkpoints", "a-b", "c").volume
    two = locate(config, "checkpoints", "a", "b-c").volume
    assert one != two
    assert one == "tfenv-checkpoints-a_2db-c"


@pytest.mark.parametrize(
    "template",
    [
        "/abs/{username}/{environment}",
        "{environment}",
        "{environment}/{username}",
        "{username}/../{environment}",
        "{username}//{environment}",
        "{username}/{environment}/x",
        "{username}/{environment}{environment}",
        "{username}/{other}/{environment}",
        "./{username}/{environment}",
    ],
)
def test_bad_subpath_templates_are_refused(template):
    with pytest.raises(CheckpointStorageError, match="checkpoint_subpath"):
        check_subpath_template(template)


def test_good_subpath_templates():
    assert check_subpath_template("{username}/{environment}") == ["{username}", "{environment}"]
    assert check_subpath_template("teams/u-{username}/{environment}")[1] == "u-{username}"


@pytest.mark.parametrize(
    "template",
    [
        "tfenv-{username}",
        "tfenv-{username}{environment}",
        "tfenv-{username}_{environment}",
        "{username}-{environment}",
        "tfenv/{username}-{environment}",
        "tfenv-{username}-{environment}-{kind}",
    ],
)
def test_bad_volume_templates_are_refused(template):
    with pytest.raises(CheckpointStorageError):
        check_volume_template(template, "checkpoint_volume")


def test_storage_config_checks():
    StorageConfig().validate()
    StorageConfig(mode="volume").validate()
    StorageConfig(mode="off").validate()
    with pytest.raises(CheckpointStorageError, match="absolute"):
        StorageConfig(checkpoint_root="relative/path").validate()
    with pytest.raises(CheckpointStorageError, match="different"):
        StorageConfig(checkpoint_root="/x", log_root="/x").validate()


def test_is_inside_uses_path_components_not_prefixes():
    assert is_inside("/data/alice", "/data/alice")
    assert is_inside("/data/alice/tf220", "/data/alice")
    assert not is_inside("/data/alice2", "/data/alice")
    assert not is_inside("/data/alice2/tf220", "/data/alice")
    assert not is_inside("/data", "/data/alice")
    assert not is_inside("relative", "/data")


@pytest.mark.parametrize(
    "name",
    ["", "/etc/passwd", "../x", "a/../b", "a/./b", "a//b", "a\0b", "..", ".", "a/"],
)
def test_item_names_that_could_point_elsewhere_are_not_found(name):
    with pytest.raises(CheckpointNotFound) as info:
        check_item_name(name)
    assert info.value.http_status == 404


# -- where folders go, and who owns them --------------------------------------------------------


def bind_config(tmp_path: Path, subpath: str = "{username}/{environment}") -> StorageConfig:
    return StorageConfig(
        checkpoint_root=str(tmp_path / "ckpt"), log_root=str(tmp_path / "logs"), subpath=subpath
    )


def test_locations_of_a_kernel(tmp_path):
    config = bind_config(tmp_path)
    ckpt, logs = kernel_locations(config, "a/b", "tf220")
    assert ckpt.host_path == str(tmp_path / "ckpt" / "a%2Fb" / "tf220")
    assert logs.host_path == str(tmp_path / "logs" / "a%2Fb" / "tf220")
    assert ckpt.user_dir == str(tmp_path / "ckpt" / "a%2Fb")
    assert kernel_environment([ckpt, logs]) == {
        "TFENV_CHECKPOINT_DIR": "/tfenv/checkpoints",
        "TFENV_LOG_DIR": "/tfenv/logs",
    }
    assert ckpt.mount()["Target"] == "/tfenv/checkpoints"
    assert ckpt.mount()["Source"] == ckpt.host_path and ckpt.mount()["Type"] == "bind"
    # Whatever the names, the folder is a child of the user's, which is a child of the root.
    for user in NAMES:
        for env in ("..", "../..", "/etc", "a/../../b"):
            loc = locate(config, "checkpoints", user, env)
            assert Path(loc.host_path).parent == Path(loc.user_dir)
            assert Path(loc.user_dir).parent == tmp_path / "ckpt"
    assert kernel_locations(StorageConfig(mode="off"), "u", "e") == []


def test_other_environments_are_the_users_real_folders_read_only(tmp_path):
    """Issue 19, item 5: what a kernel of tf220 gets of the user's other environments."""
    config = bind_config(tmp_path)
    uid, gid = os.getuid(), os.getgid()
    tf219 = prepare_bind(locate(config, "checkpoints", "alice", "tf219"), uid, gid)
    user_dir = tmp_path / "ckpt" / "alice"
    (user_dir / "tf219" / "run1").mkdir()
    (user_dir / "linked").symlink_to(user_dir / "tf219")  # a symlink: never mounted
    (user_dir / "a-file").write_text("not a folder")
    outside = tmp_path / "outside"
    outside.mkdir()
    (user_dir / "away").symlink_to(outside)
    env = environment_from_dict({"id": "tf220", "image": "tfenv-test/python:3.11-jupyter"})
    storage = prepare_kernel_storage(None, config, "alice", env, uid=uid, gid=gid, image_id="x")
    # Nothing is created for an environment that has no folder (py, gpu, ...).
    assert sorted(p.name for p in user_dir.iterdir()) == [
        "a-file",
        "away",
        "linked",
        "tf219",
        "tf220",
    ]
    others = [m for m in storage.mounts if m["Target"].startswith("/tfenv/checkpoints-of/")]
    assert [(m["Target"], m["Source"], m["ReadOnly"]) for m in others] == [
        ("/tfenv/checkpoints-of/tf219", str(user_dir / "tf219"), True)
    ]
    assert storage.environment["TFENV_CHECKPOINTS_OF_DIR"] == "/tfenv/checkpoints-of"
    # Recorded as checked (the broker stages it by descriptor, both check it after the
    # start), with the identity it had when it was looked at.
    (checked,) = [c for c in storage.checked if c.target == "/tfenv/checkpoints-of/tf219"]
    assert (checked.dev, checked.ino) == (tf219.st_dev, tf219.st_ino)
    assert storage.info["others"] == [
        {
            "environment": "tf219",
            "kind": "checkpoints",
            "container_path": "/tfenv/checkpoints-of/tf219",
            "storage": "bind",
            "host_path": str(user_dir / "tf219"),
            "read_only": True,
        }
    ]
    # Another uid's folder is not the user's to read; a kernel sees no environment twice.
    assert other_environments(None, config, "alice", "tf220", uid=uid + 1) == []
    names = [
        o.location.environment for o in other_environments(None, config, "alice", "tf219", uid=uid)
    ]
    assert names == ["tf220"]
    # Storage off: nothing, and no variable.
    off = prepare_kernel_storage(
        None, StorageConfig(mode="off"), "alice", env, uid=uid, gid=gid, image_id="x"
    )
    assert off.mounts == [] and "TFENV_CHECKPOINTS_OF_DIR" not in off.environment


def test_volume_locations_render_options(tmp_path):
    config = StorageConfig(
        mode="volume",
        volume_options={"type": "nfs", "device": ":/export/{kind}/{username}/{environment}"},
    )
    loc = locate(config, "logs", "a/b", "tf220")
    assert loc.volume == "tfenv-logs-a_2fb-tf220"
    assert loc.options["device"] == ":/export/logs/a%2Fb/tf220"
    mount = loc.mount()
    assert (mount["Type"], mount["Source"], mount["Target"]) == (
        "volume",
        "tfenv-logs-a_2fb-tf220",
        "/tfenv/logs",
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand folders to another uid")
def test_prepare_bind_creates_the_users_folders_for_the_kernel_uid(tmp_path):
    config = bind_config(tmp_path, "shared/{username}/{environment}")
    loc = locate(config, "checkpoints", "alice", "tf220")
    prepare_bind(loc, 1000, 1000)
    shared = tmp_path / "ckpt" / "shared"
    user = shared / "alice"
    env = user / "tf220"
    assert shared.stat().st_uid == 0 and shared.stat().st_mode & 0o777 == 0o755
    # Root for another uid: the user's folder above the environment's stays root's.
    info = user.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (0, 1000, 0o750)
    info = env.stat()
    assert (info.st_uid, info.st_gid) == (1000, 1000)
    assert info.st_mode & 0o777 == 0o700
    prepare_bind(loc, 1000, 1000)  # again: nothing to do

    # A root-owned folder (made by hand, or by an old version) is handed over …
    os.chown(env, 0, 0)
    prepare_bind(loc, 1000, 1000)
    assert env.stat().st_uid == 1000
    # … another user's is refused, with what to do …
    os.chown(env, 1001, 1001)
    with pytest.raises(CheckpointStorageError, match="belongs to uid 1001"):
        prepare_bind(loc, 1000, 1000)
    # … and so is a symlink, wherever it points.
    other = locate(config, "checkpoints", "alice", "tf219")
    Path(other.host_path).symlink_to(tmp_path)
    with pytest.raises(CheckpointStorageError, match="symlink"):
        prepare_bind(other, 1000, 1000)


def test_bind_folder_refuses_symlinks_below_the_root(tmp_path):
    config = bind_config(tmp_path)
    loc = locate(config, "checkpoints", "alice", "tf220")
    outside = tmp_path / "outside"
    outside.mkdir()
    Path(loc.user_dir).mkdir(parents=True)
    Path(loc.host_path).symlink_to(outside)
    assert bind_folder(loc) is None
    assert scan_bind(loc)["exists"] is False
    # A symlinked user folder leads elsewhere too.
    other = locate(config, "checkpoints", "bob", "tf220")
    (outside / "tf220").mkdir()
    Path(other.user_dir).symlink_to(outside)
    assert bind_folder(other) is None
    assert discover_bind(config, "bob") == []
    # A root that is itself a symlink is fine: it is resolved once, below it nothing is.
    real_root = tmp_path / "real"
    (real_root / "carol" / "tf220").mkdir(parents=True)
    (tmp_path / "link-root").symlink_to(real_root)
    linked = StorageConfig(checkpoint_root=str(tmp_path / "link-root"), log_root="/x")
    loc = locate(linked, "checkpoints", "carol", "tf220")
    assert bind_folder(loc) == str(real_root / "carol" / "tf220")
    assert discover_bind(linked, "carol") == ["tf220"]


def test_discover_lists_canonical_real_folders(tmp_path):
    config = bind_config(tmp_path)
    user = Path(locate(config, "checkpoints", "alice", "x").user_dir)
    for name in ("tf220", "old%2Fenv", "not canonical", "%2E."):
        (user / name).mkdir(parents=True)
    (user / "file").write_text("")
    (user / "link").symlink_to(tmp_path)
    assert discover_bind(config, "alice") == ["..", "old/env", "tf220"]


# -- classifying what a folder holds ------------------------------------------------------------


def write(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def tf_set(folder: Path, steps=(1, 2), latest=None, name="ckpt", shards=1) -> None:
    for step in steps:
        write(folder / f"{name}-{step}.index", b"i" * 7)
        for shard in range(shards):
            write(folder / f"{name}-{step}.data-{shard:05d}-of-{shards:05d}", b"d" * 50)
    lines = [f'model_checkpoint_path: "{name}-{latest or steps[-1]}"']
    lines += [f'all_model_checkpoint_paths: "{name}-{s}"' for s in steps]
    lines += ["all_model_checkpoint_timestamps: 1700000000.5", "last_preserved_timestamp: 1.0"]
    write(folder / "checkpoint", ("\n".join(lines) + "\n").encode())


def keras_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.h5", b"w" * 1000)
    return buffer.getvalue()


def h5_bytes(eof: int, size: int) -> bytes:
    """An HDF5 file with a version-0 superblock that says it ends at ``eof``."""
    undefined = 0xFFFFFFFFFFFFFFFF
    head = b"\x89HDF\r\n\x1a\n" + bytes([0, 0, 0, 0, 0, 8, 8, 0]) + struct.pack("<HHI", 4, 16, 0)
    head += struct.pack("<QQQQ", 0, undefined, eof, undefined)
    return head + b"\0" * (size - len(head))


def listing(root: Path) -> dict[str, dict]:
    return {i["name"]: public_item(i) for i in classify(_inventory(str(root)))}


def test_tf_sets_keras_files_saved_models_and_partial_saves(tmp_path):
    root = tmp_path / "env"
    tf_set(root / "tf", steps=(3, 4, 5))
    write(root / "tf" / "ckpt-6_temp" / "part-00000-of-00001.data-00000-of-00001.tempstate99")
    write(root / "tf" / "checkpoint.tmp1a2b")
    tf_set(root / "sharded", steps=(1,), shards=2)
    write(root / "keras" / "epoch-01.keras", keras_bytes())
    write(root / "keras" / "epoch-02.keras", keras_bytes()[:-30])  # cut off mid-write
    write(root / "keras" / "epoch-01.weights.h5", h5_bytes(eof=4096, size=4096))
    write(root / "keras" / "epoch-02.weights.h5", h5_bytes(eof=4096, size=2048))
    write(root / "legacy.h5", h5_bytes(eof=512, size=600))
    write(root / "export" / "7" / "saved_model.pb", b"p" * 30)
    write(root / "export" / "7" / "variables" / "variables.index", b"i")
    write(root / "export" / "7" / "variables" / "variables.data-00000-of-00001", b"d" * 9)
    write(root / "export" / "8" / "saved_model.pb", b"p")
    write(root / "export" / "8" / "variables" / "variables.data-00000-of-00001", b"d")
    write(root / "loose" / "weights-3.index", b"i")
    write(root / "loose" / "weights-3.data-00000-of-00001", b"d")
    write(root / "loose" / "weights-4.data-00000-of-00001", b"d")  # its index never came
    write(root / "stray.tmp")
    write(root / "events.out.tfevents.1.host", b"e")  # not a checkpoint: not listed
    items = listing(root)
    assert set(items) == {
        "tf/checkpoint",
        "sharded/checkpoint",
        "keras/epoch-01.keras",
        "keras/epoch-02.keras",
        "keras/epoch-01.weights.h5",
        "keras/epoch-02.weights.h5",
        "legacy.h5",
        "export/7/saved_model.pb",
        "export/8/saved_model.pb",
        "loose/weights-3.index",
        "loose/weights-4.data-00000-of-00001",
        "stray.tmp",
    }
    tf = items["tf/checkpoint"]
    assert tf["kind"] == "tf_checkpoint_set" and tf["complete"] is True
    assert tf["step"] == 5 and tf["latest"]["prefix"] == "tf/ckpt-5"
    assert [c["step"] for c in tf["checkpoints"]] == [3, 4, 5]
    assert [x["prefix"] for x in tf["leftovers"]] == ["tf/ckpt-6_temp", "tf/checkpoint.tmp1a2b"]
    on_disk = sum(p.stat().st_size for p in (root / "tf").rglob("*") if p.is_file())
    assert tf["size"] == on_disk
    assert tf["files"] == 3 * 2 + 1 + 1 + 1
    assert items["sharded/checkpoint"]["latest"]["shards"] == {"present": 2, "expected": 2}
    assert items["keras/epoch-01.keras"]["complete"] is True
    assert items["keras/epoch-02.keras"]["complete"] is False
    weights = items["keras/epoch-01.weights.h5"]
    assert (weights["kind"], weights["step"], weights["complete"]) == ("keras_weights", 1, True)
    assert items["keras/epoch-02.weights.h5"]["complete"] is False
    assert items["legacy.h5"]["kind"] == "keras_h5" and items["legacy.h5"]["complete"] is True
    saved = items["export/7/saved_model.pb"]
    assert saved["kind"] == "saved_model" and saved["path"] == "export/7" and saved["step"] == 7
    assert saved["complete"] is True and saved["files"] == 3
    assert items["export/8/saved_model.pb"]["complete"] is False  # variables without index
    loose = items["loose/weights-3.index"]
    assert loose["kind"] == "tf_checkpoint" and loose["complete"] is True and loose["step"] == 3
    assert items["loose/weights-4.data-00000-of-00001"]["complete"] is False
    assert items["stray.tmp"]["kind"] == "partial"


def test_latest_with_a_missing_index_is_incomplete(tmp_path):
    root = tmp_path / "env"
    tf_set(root, steps=(1, 2))
    (root / "ckpt-2.index").unlink()
    item = listing(root)["checkpoint"]
    assert item["complete"] is False
    assert [c["complete"] for c in item["checkpoints"]] == [True, False]


def test_a_saved_model_at_the_top_owns_the_whole_folder(tmp_path):
    write(tmp_path / "saved_model.pb")
    write(tmp_path / "variables" / "variables.index")
    write(tmp_path / "variables" / "variables.data-00000-of-00001")
    items = listing(tmp_path)
    assert list(items) == ["saved_model.pb"]
    assert items["saved_model.pb"]["path"] == ""


def test_symlinks_are_never_part_of_a_listing(tmp_path):
    outside = tmp_path / "outside"
    tf_set(outside)
    write(outside / "model.keras", keras_bytes())
    root = tmp_path / "env"
    root.mkdir()
    (root / "dir-link").symlink_to(outside)
    (root / "file-link.keras").symlink_to(outside / "model.keras")
    (root / "checkpoint").symlink_to(outside / "checkpoint")
    assert listing(root) == {}


def test_state_files_with_absolute_paths(tmp_path):
    host = str(tmp_path)
    state = parse_state(
        'model_checkpoint_path: "/tfenv/checkpoints/run/ckpt-2"\n'
        'all_model_checkpoint_paths: "/tfenv/checkpoints/run/ckpt-1"\n'
        'all_model_checkpoint_paths: "/tfenv/checkpoints/run/ckpt-2"\n'
    )
    assert state == {
        "latest": "/tfenv/checkpoints/run/ckpt-2",
        "kept": ["/tfenv/checkpoints/run/ckpt-1", "/tfenv/checkpoints/run/ckpt-2"],
    }
    assert parse_state("garbage") is None
    tf_set(tmp_path / "run", steps=(1, 2))
    for written_as in (f"{CONTAINER_CHECKPOINT_DIR}/run", f"{host}/run", "/elsewhere/moved"):
        text = f'model_checkpoint_path: "{written_as}/ckpt-2"\n'
        text += f'all_model_checkpoint_paths: "{written_as}/ckpt-1"\n'
        text += f'all_model_checkpoint_paths: "{written_as}/ckpt-2"\n'
        (tmp_path / "run" / "checkpoint").write_text(text)
        items = {i["name"]: i for i in classify(_inventory(host), host_root=host)}
        item = items["run/checkpoint"]
        assert item["latest"]["prefix"] == "run/ckpt-2", written_as
        assert item["complete"] is True


def test_etag_changes_with_any_file(tmp_path):
    tf_set(tmp_path)
    before = listing(tmp_path)["checkpoint"]["etag"]
    assert listing(tmp_path)["checkpoint"]["etag"] == before
    write(tmp_path / "ckpt-1.data-00000-of-00001", b"other bytes")
    assert listing(tmp_path)["checkpoint"]["etag"] != before


def test_completeness_checks_on_odd_files(tmp_path):
    assert _zip_complete(str(write(tmp_path / "tiny.keras", b"PK"))) is False
    assert _zip_complete(str(write(tmp_path / "ok.keras", keras_bytes()))) is True
    assert _h5_complete(str(write(tmp_path / "not.h5", b"nothing here at all"))) is False
    assert _h5_complete(str(write(tmp_path / "ok.h5", h5_bytes(100, 100)))) is True
    assert _h5_complete(str(write(tmp_path / "cut.h5", h5_bytes(100, 99)))) is False
    odd = bytearray(h5_bytes(100, 100))
    odd[8] = 9  # a superblock version this does not read
    assert _h5_complete(str(write(tmp_path / "odd.h5", bytes(odd)))) is None


def test_inventory_limits(tmp_path):
    for i in range(5):
        write(tmp_path / f"f{i}")
    write(tmp_path / "a" / "b" / "c" / "deep")
    assert _inventory(str(tmp_path), max_entries=3)["truncated"] is True
    deep = _inventory(str(tmp_path), max_depth=2)
    assert deep["truncated"] is True
    assert "a/b/c" not in [e[0] for e in deep["entries"]]
    assert _inventory(str(tmp_path / "missing"))["exists"] is False


# -- deleting ------------------------------------------------------------------------------------


def test_delete_removes_files_and_emptied_folders_only(tmp_path):
    root = tmp_path / "env"
    tf_set(root / "run")
    write(root / "run" / "ckpt-3_temp" / "part")
    write(root / "keep.keras", keras_bytes())
    item = next(i for i in classify(_inventory(str(root))) if i["name"] == "run/checkpoint")
    result = _delete(str(root), item["_remove"])
    assert not result["failed"]
    assert not (root / "run").exists()
    assert (root / "keep.keras").exists() and root.exists()


def test_delete_never_goes_through_a_symlink(tmp_path):
    root = tmp_path / "env"
    outside = tmp_path / "outside"
    write(outside / "precious")
    write(outside / "sub" / "file")
    root.mkdir()
    (root / "link").symlink_to(outside)
    result = _delete(str(root), ["link/precious", "link/sub", "../outside/precious", "/etc/x"])
    assert (outside / "precious").exists() and (outside / "sub" / "file").exists()
    assert sorted(r for r, _ in result["failed"]) == sorted(
        ["link/precious", "link/sub", "../outside/precious", "/etc/x"]
    )
    # A symlink itself named by the list is removed as a link, its target untouched.
    _delete(str(root), ["link"])
    assert not (root / "link").is_symlink() and (outside / "precious").exists()


# -- what is shipped into helper containers, and the container spec ------------------------------


def test_helper_script_is_python36_and_runs(tmp_path):
    script = _helper_script()
    ast.parse(script, feature_version=(3, 6))
    tf_set(tmp_path / "env" / "run")
    args = json.dumps({"call": "_inventory", "roots": [str(tmp_path / "env"), "/nonexistent"]})
    out = subprocess.run(
        [sys.executable, "-c", script, args], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("TFENV-HELPER ")
    shipped, missing = json.loads(out[len("TFENV-HELPER ") :])
    local = _inventory(str(tmp_path / "env"))
    assert shipped["state"] == local["state"]
    assert sorted(map(tuple, shipped["entries"])) == sorted(map(tuple, local["entries"]))
    assert missing["exists"] is False


def test_helper_script_names_only_what_it_defines_or_imports():
    """The shipped functions are source text in another interpreter: a name they use must
    be a builtin, a module the script imports, another shipped function or their own."""
    tree = ast.parse(_helper_script())
    known = set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            known.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.arg)):
            known.add(node.name if isinstance(node, ast.FunctionDef) else node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            known.add(node.id)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            known.add(node.name)
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert used <= known, sorted(used - known)


def test_container_spec_mounts_the_storage_and_announces_it(tmp_path):
    env = environment_from_dict({"id": "tf220", "image": "tensorflow/tensorflow:2.20.0-jupyter"})
    locations = kernel_locations(bind_config(tmp_path), "alice", "tf220")
    req = KernelRequest(
        kernel_id="k" * 32,
        cmd=["python3"],
        uid=1000,
        gid=1000,
        owner="alice",
        workdir="/w",
        notebook_mount=None,
        runtime_dir="/tmp/r",
        runtimes_dir=None,
        image_id="sha256:x",
        environment={},
        extra_mounts=tuple(loc.mount() for loc in locations),
        extra_env=kernel_environment(locations),
    )
    spec = container_spec(env, req)
    targets = {m["Target"]: m for m in spec["mounts"]}
    assert targets["/tfenv/checkpoints"]["Source"] == str(tmp_path / "ckpt" / "alice" / "tf220")
    assert targets["/tfenv/logs"]["ReadOnly"] is False
    assert spec["environment"]["TFENV_CHECKPOINT_DIR"] == "/tfenv/checkpoints"
    assert spec["environment"]["TFENV_LOG_DIR"] == "/tfenv/logs"


def test_default_roots_are_in_the_home_folder_unless_the_environment_says(monkeypatch, tmp_path):
    from jupyter_tfenv.provisioning.provisioner import DockerKernelProvisioner

    monkeypatch.delenv("JUPYTER_TFENV_CHECKPOINT_ROOT", raising=False)
    monkeypatch.delenv("JUPYTER_TFENV_LOG_ROOT", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    config = StorageConfig.from_provisioner(DockerKernelProvisioner(kernel_id="a"))
    assert config.mode == "bind" and config.subpath == "{username}/{environment}"
    assert config.root("checkpoints") == str(tmp_path / "tfenv" / "checkpoints")
    assert config.root("logs") == str(tmp_path / "tfenv" / "logs")
    monkeypatch.setenv("JUPYTER_TFENV_CHECKPOINT_ROOT", "/srv/ckpt")
    monkeypatch.setenv("JUPYTER_TFENV_LOG_ROOT", "/srv/logs")
    config = StorageConfig.from_provisioner(DockerKernelProvisioner(kernel_id="b"))
    assert (config.root("checkpoints"), config.root("logs")) == ("/srv/ckpt", "/srv/logs")
