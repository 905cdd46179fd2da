"""``jupyter tfenv``: the catalog from a terminal or a CI job.

It reads the same configuration as the server (``jupyter_server_config.*`` on the Jupyter
config path, plus ``$JUPYTER_TFENV_CATALOG``), so what it checks is what the server runs.
Human output by default, ``--json`` for scripts; a non-zero exit on every problem.
"""

# Longer than 600 lines: one small function per subcommand and the one argument parser
# that names them all; the work itself lives in the layers below.

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import docker
from docker.errors import ImageNotFound
from jupyter_core.application import JupyterApp
from jupyter_core.paths import jupyter_data_dir
from traitlets.config import Application, Config

from jupyter_tfenv.backends.docker.builder import NO_LOCK_FILE, build_chain, check_builds
from jupyter_tfenv.backends.docker.engine import (
    connect,
    image_missing_message,
    reap_orphans,
    tfenv_containers,
)
from jupyter_tfenv.backends.docker.probe import probe_cache_dir, probe_image
from jupyter_tfenv.backends.docker.pulls import pull_blocking
from jupyter_tfenv.catalog.images import check_pinned
from jupyter_tfenv.catalog.loading import TFEnvCatalog
from jupyter_tfenv.catalog.lock import (
    LockFile,
    LockMismatchError,
    LockMissingError,
    check_lock,
    lock_environments,
    require_lock,
)
from jupyter_tfenv.catalog.validation import environment_from_dict
from jupyter_tfenv.cli_checks import (
    LIVE_RESTORE_OFF,
    compatibility_lines,
    compatibility_of,
    engine_check,
    engine_line,
)
from jupyter_tfenv.cli_tensorboard import add_tensorboard_parser
from jupyter_tfenv.core import metrics
from jupyter_tfenv.errors import TFEnvError
from jupyter_tfenv.kernels.probe_output import package_changes
from jupyter_tfenv.kernels.runtimes import build_runtime, default_runtimes_dir, list_runtimes
from jupyter_tfenv.lifecycle.adoption import held_by_live_server
from jupyter_tfenv.provisioning.kernelspecs import write_kernelspecs
from jupyter_tfenv.provisioning.provisioner import TFEnvKernelProvisioner
from jupyter_tfenv.tensorboard.container import reap_tensorboards


class _ConfigLoader(JupyterApp):
    """Loads the server's config files the way the server does."""

    name = "jupyter-tfenv"

    @property
    def config_file_paths(self) -> list[str]:
        return list(super().config_file_paths)

    def load(self, extra_files: list[str]) -> Config:
        # JupyterApp.load_config_file only knows the app's own file name; the base class's
        # loads any base name (.py and .json) from a list of folders.
        Application.load_config_file(self, "jupyter_server_config", path=self.config_file_paths)
        for extra in extra_files:
            path = Path(extra).expanduser().resolve()
            if not path.is_file():
                raise TFEnvError(f"config file {path} does not exist.")
            Application.load_config_file(self, path.stem, path=[str(path.parent)])
        return self.config


def _load(args: argparse.Namespace) -> tuple[Config, TFEnvCatalog]:
    config = _ConfigLoader().load(args.config or [])
    catalog = TFEnvCatalog(config=config)
    if args.catalog:
        catalog.catalog_files = [*catalog.catalog_files, *args.catalog]
    if args.pinning:
        catalog.pinning = args.pinning
    if getattr(args, "lock_file", None):
        catalog.lock_file = args.lock_file
    catalog.refresh(force=True)
    return config, catalog


def _emit(args: argparse.Namespace, data: Any, human: str) -> None:
    print(json.dumps(data, indent=2) if args.json else human)


def cmd_list(args: argparse.Namespace) -> int:
    _, catalog = _load(args)
    envs = catalog.all()
    rows = [env.summary() for env in envs]
    width = max([len(r["id"]) for r in rows] + [2])
    human = (
        "\n".join(
            f"{r['id']:<{width}}  {r['gpu_label']:<8}  TF {r['tensorflow'] or '?':<8}  {r['image']}"
            for r in rows
        )
        or "No environments in the catalog."
    )
    problems = catalog.problems()
    if problems:
        human += (
            f"\n\n{len(problems)} entr{'y' if len(problems) == 1 else 'ies'} left out; "
            "run `jupyter tfenv check`."
        )
    _emit(args, {"environments": rows, "problems": [p.to_dict() for p in problems]}, human)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the catalog and pinning, and (unless --offline) the engine, image presence
    and each GPU environment's compatibility with this host's GPUs (cli_checks.py)."""
    _, catalog = _load(args)
    problems = [p.to_dict() for p in catalog.problems()]
    envs = catalog.all()
    images: dict[str, str] = {}
    unlocked: set[str] = set()
    if catalog.lock_policy == "strict":
        strict_lock = _lock_of(catalog)
        for env in envs:
            try:
                require_lock(env, strict_lock, catalog.lock_path())
            except LockMissingError as err:
                unlocked.add(env.id)
                problems.append(
                    {
                        "source": err.path or "lock",
                        "entry": f"'{env.id}'",
                        "field": "image",
                        "message": str(err),
                    }
                )
    empty = not envs and not problems
    engine: dict[str, Any] | None = None
    warnings: list[str] = []
    client: docker.DockerClient | None = None
    if not args.offline:
        engine, client = engine_check()
        if client is None:
            problems.append(
                {"source": "docker", "entry": "", "field": "", "message": engine["error"]}
            )
        elif not engine["live_restore"]:
            text = " ".join(part.strip() for part in LIVE_RESTORE_OFF.splitlines())
            warnings.append(f"Docker engine at {engine['host']}: {text}")
    if not args.offline and envs and client is not None:
        lock = _lock_of(catalog)
        for env in envs:
            try:
                images[env.id] = client.images.get(env.image).id
                if lock is not None and lock.get(env.image):
                    check_lock(client, env, lock)
            except LockMismatchError as err:
                images.pop(env.id, None)
                where = str(lock.path) if lock is not None else "lock"
                problems.append(
                    {
                        "source": where,
                        "entry": f"'{env.id}'",
                        "field": "image",
                        "message": str(err),
                    }
                )
            except ImageNotFound:
                problems.append(
                    {
                        "source": env.source,
                        "entry": f"'{env.id}'",
                        "field": "image",
                        "message": image_missing_message(env)
                        if env.derived is not None
                        else f"{env.image} is not on this Docker engine; "
                        f"`docker pull {env.image}` it.",
                    }
                )
        check_builds(client, envs, lock, problems, warnings)
    first = engine_line(engine) if engine is not None else None
    lines = [first] if first else []
    lines += [
        f"ok  {env.id}: {env.image}"
        for env in envs
        if (env.id in images or args.offline) and env.id not in unlocked
    ]
    # GPU compatibility (issue 20 item 2): from the cached probes, never a new container.
    verdicts = {} if args.offline else compatibility_of(envs, images, client is not None)
    lines += compatibility_lines(verdicts, problems, warnings)
    for p in problems:
        where = ": ".join(
            x for x in (p["source"], p["entry"] and f"environment {p['entry']}", p["field"]) if x
        )
        lines.append(f"ERROR  {where}: {p['message']}")
    if empty:
        lines.append(
            "ERROR  the catalog is empty: declare environments in "
            "c.TFEnvCatalog.environments or a catalog file ($JUPYTER_TFENV_CATALOG)."
        )
        problems.append({"source": "", "entry": "", "field": "", "message": "empty catalog"})
    _emit(
        args,
        {
            "ok": not problems,
            "environments": [e.id for e in envs],
            "problems": problems,
            "warnings": warnings,
            "engine": engine,
            "compatibility": None
            if args.offline
            else {env_id: v.to_dict() for env_id, v in verdicts.items()},
        },
        "\n".join(lines),
    )
    return 1 if problems else 0


def cmd_build(args: argparse.Namespace) -> int:
    """Build derived environments (base + pinned packages) without network, by content."""
    _, catalog = _load(args)
    if args.env:
        envs = [catalog.get(env_id) for env_id in args.env]
    else:
        envs = [env for env in catalog.all() if env.derived is not None]
    path = catalog.lock_path()
    if path is None:
        raise TFEnvError(NO_LOCK_FILE)
    lock = LockFile.load(path)
    client = connect()
    quiet = args.json

    def progress(event: dict[str, Any]) -> None:
        if not quiet:
            indent = "" if event.get("phase") == "start" else "  "
            print(f"{indent}{event.get('message', '')}", file=sys.stderr, flush=True)

    # Derived bases first (a chain); the lock is saved after each build.
    results = [
        result.to_dict()
        for result in build_chain(
            catalog,
            client,
            [env.id for env in envs],
            lock=lock,
            progress=progress,
            cache=Path(args.wheel_cache) if args.wheel_cache else None,
            push=args.push,
            rebuild=args.rebuild,
            resolve_again=args.resolve,
        )
    ]
    lines = [
        f"{r['id']}: {r['image']} ({'already built' if r['already_built'] else 'built'}, "
        f"image {r['image_id'][:19]}"
        + (f", pushed {r['pushed']}@{r['digest']}" if r["digest"] else "")
        + ")"
        for r in results
    ]
    if results:
        lines.append(f"recorded in {lock.path}")
    _emit(
        args,
        {"built": results, "lock_file": str(lock.path)},
        "\n".join(lines) or "No derived environments (entries with base and pip) to build.",
    )
    return 0


def cmd_kernelspecs(args: argparse.Namespace) -> int:
    _, catalog = _load(args)
    if args.prefix:
        target = Path(args.prefix) / "share" / "jupyter" / "kernels"
    elif args.user:
        target = Path(jupyter_data_dir()) / "kernels"
    else:
        target = Path(sys.prefix) / "share" / "jupyter" / "kernels"
    written = write_kernelspecs(
        catalog.all(),
        target,
        pinning=catalog.pinning,
        prune=args.prune,
        lock=_lock_of(catalog),
        lock_policy=catalog.lock_policy,
    )
    _emit(
        args,
        {"kernels_dir": str(target), "written": [p.name for p in written]},
        "\n".join(f"wrote {p}" for p in written) or "No environments to write.",
    )
    return 1 if catalog.problems() else 0


def cmd_gc(args: argparse.Namespace) -> int:
    config, _ = _load(args)
    prov = TFEnvKernelProvisioner(config=config, kernel_id="gc")
    client = connect(prov.docker_timeout)
    owner = None if args.all_users else prov.owner
    reaped = reap_orphans(
        client,
        owner,
        runtime_roots=[prov.runtime_root],
        dry_run=args.dry_run,
        is_held=held_by_live_server,
    )
    verb = "would remove" if args.dry_run else "removed"
    human = "\n".join(
        f"{verb} {r.name} ({r.environment}, kernel {r.kernel_id}): {r.reason}" for r in reaped
    )
    boards = reap_tensorboards(
        client, owner, runtime_roots=[prov.runtime_root], dry_run=args.dry_run
    )
    human += "".join(f"\n{verb} TensorBoard {b.name} ({b.tensorboard}): {b.reason}" for b in boards)
    running = len(tfenv_containers(client, owner))
    human = (
        human.lstrip("\n") + "\n" if human else "No orphaned kernel containers.\n"
    ) + f"{running} tfenv kernel container(s) remain."
    _emit(
        args,
        {
            "removed" if not args.dry_run else "would_remove": [r.__dict__ for r in reaped],
            "remaining": running,
            "tensorboards_" + ("removed" if not args.dry_run else "would_remove"): [
                b.__dict__ for b in boards
            ],
        },
        human,
    )
    return 0


def cmd_runtime(args: argparse.Namespace) -> int:
    root = Path(args.runtimes_dir) if args.runtimes_dir else default_runtimes_dir()
    if args.action == "list":
        names = list_runtimes(root)
        _emit(
            args,
            {"runtimes_dir": str(root), "runtimes": names},
            "\n".join(names) or f"No kernel runtimes in {root}.",
        )
        return 0
    print(f"Building the ipykernel runtime for Python {args.python} in {root} …", file=sys.stderr)
    path = build_runtime(
        args.python,
        runtimes_dir=root,
        find_links=args.find_links,
        no_index=args.no_index,
        force=args.force,
    )
    _emit(args, {"runtime": str(path)}, f"built {path}")
    return 0


def _lock_of(catalog: TFEnvCatalog) -> LockFile | None:
    path = catalog.lock_path()
    return LockFile.load(path) if path is not None and catalog.lock_policy != "off" else None


def cmd_pull(args: argparse.Namespace) -> int:
    """Pull images (the locked digest where the lock pins a tag), with progress on stderr."""
    _, catalog = _load(args)
    envs = [catalog.get(env_id) for env_id in args.env] if args.env else catalog.all()
    client = connect()
    lock = _lock_of(catalog)
    show = not args.json and sys.stderr.isatty()
    pulled = []
    for env in envs:

        def on_event(event: dict[str, Any], env_id: str = env.id) -> None:
            progress = event.get("progress") or {}
            if show and progress.get("total"):
                print(
                    f"\r{env_id}: {progress.get('layers_done', 0)}/{progress.get('layers', 0)} "
                    f"layers, {progress['current'] / 1e6:.0f}/{progress['total'] / 1e6:.0f} MB "
                    f"({progress.get('percent') or 0:.0f}%)",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )

        if not args.json:
            print(f"pulling {env.id}: {env.image} …", file=sys.stderr)
        try:
            result = pull_blocking(client, env, on_event, lock=lock)
        finally:
            if show:
                print(file=sys.stderr)
        metrics.image_pulled(env.id, ok=True)
        pulled.append(result.to_dict())
    _emit(
        args,
        {"pulled": pulled},
        "\n".join(f"{p['id']}: {p['image']} -> {p['digest'] or p['image_id']}" for p in pulled),
    )
    return 0


def cmd_lock(args: argparse.Namespace) -> int:
    """Record the digest each tag resolves to, so that the whole team runs the same bits."""
    _, catalog = _load(args)
    path = catalog.lock_path()
    if path is None:
        raise TFEnvError(
            "No lock file to write: give --lock-file, set c.TFEnvCatalog.lock_file or "
            "$JUPYTER_TFENV_LOCK, or use a catalog file (the lock goes beside it)."
        )
    envs = [catalog.get(env_id) for env_id in args.env] if args.env else catalog.all()
    lock = LockFile.load(path)
    changes = lock_environments(connect(), envs, lock, from_local=args.from_local)
    lock.save()
    _emit(
        args,
        {"lock_file": str(path), "changes": [c.to_dict() for c in changes]},
        "\n".join(
            f"{c.env_id}: {c.image} -> {c.new}"
            + (f" (was {c.old})" if c.changed and c.old else "" if c.changed else " (unchanged)")
            for c in changes
        )
        + f"\nwrote {path}",
    )
    return 0


def _probe_lines(result: dict[str, Any]) -> str:
    build = result.get("build") or {}
    gpus = result.get("gpus") or []
    gpu_state = result.get("gpu_state") or {}
    lines = [
        f"environment  {result.get('environment')}  ({result.get('image')})",
        f"image id     {result.get('image_id', '')[:19]}",
        f"os           {result.get('os') or '?'}",
        f"python       {result.get('python') or '?'}",
        f"tensorflow   {result.get('tensorflow') or 'not installed'}",
        f"keras        {result.get('keras') or '-'}",
        f"numpy        {result.get('numpy') or '-'}",
        f"ipykernel    {result.get('ipykernel') or 'not in the image (runtime needed)'}",
    ]
    if result.get("tensorflow"):
        kind = (
            "CUDA"
            if build.get("is_cuda_build")
            else ("ROCm" if build.get("is_rocm_build") else "CPU only")
        )
        lines.append(
            f"built for    {kind}"
            + (
                f" {build.get('cuda_version')}, cuDNN {build.get('cudnn_version')}"
                if build.get("is_cuda_build")
                else ""
            )
        )
    lines.append(
        "gpus         "
        + (
            ", ".join(
                f"{g.get('name') or g.get('device')} (cc {g.get('compute_capability')})"
                for g in gpus
            )
            or "none visible"
        )
    )
    if gpu_state.get("message"):
        lines.append(f"gpu state    {gpu_state.get('state')}: {gpu_state['message']}")
    packages = result.get("packages")
    if isinstance(packages, dict):
        lines.append(f"packages     {len(packages)} Python distributions")
    lines += _change_lines(result.get("package_changes"))
    for part, message in (result.get("errors") or {}).items():
        lines.append(f"note         {part}: {message}")
    lines.append(
        "cached       yes"
        if result.get("cached")
        else f"probed in    {result.get('duration_s', 0):.1f} s"
    )
    return "\n".join(lines)


def _change_lines(changes: dict[str, Any] | None) -> list[str]:
    """A derived environment's packages against its base's (issue 21 item 4)."""
    if not changes:
        return []
    added = ", ".join(f"{k} {v}" for k, v in changes["added"].items()) or "none"
    lines = [f"added        {added}"]
    if changes["changed"]:
        moved = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changes["changed"].items())
        lines.append(f"changed      {moved}")
    return lines


def cmd_probe(args: argparse.Namespace) -> int:
    config, catalog = _load(args)
    prov = TFEnvKernelProvisioner(config=config, kernel_id="probe")
    client = connect(prov.docker_timeout)
    envs = [catalog.get(env_id) for env_id in args.env] if args.env else catalog.all()
    results = []
    for env in envs:
        if not args.json and not args.refresh:
            print(f"probing {env.id} …", file=sys.stderr)

        def probe(target: Any) -> dict[str, Any]:
            return probe_image(
                client,
                target,
                cache_dir=probe_cache_dir(),
                uid=prov.uid,
                gid=prov.gid,
                refresh=args.refresh,
                timeout=args.timeout,
            )

        result = probe(env)
        if env.derived is not None:
            base = environment_from_dict(
                {"id": env.id, "image": env.derived.base_image, "python": env.python},
                pinning="any",
            )
            result["package_changes"] = package_changes(
                probe(base).get("packages"), result.get("packages")
            )
        results.append(result)
    _emit(
        args,
        results if len(results) != 1 else results[0],
        "\n\n".join(_probe_lines(r) for r in results),
    )
    return 0


def cmd_pin_check(args: argparse.Namespace) -> int:
    parsed = check_pinned(args.reference, args.pinning or "tags")
    _emit(args, parsed.__dict__, f"{args.reference}: pinned ({parsed.short})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--config", action="append", help="extra Jupyter config file")
    common.add_argument("--catalog", action="append", help="extra catalog file (YAML/JSON)")
    common.add_argument(
        "--pinning", choices=["tags", "digests", "any"], help="override TFEnvCatalog.pinning"
    )
    common.add_argument("--lock-file", help="override TFEnvCatalog.lock_file")
    parser = argparse.ArgumentParser(
        prog="jupyter tfenv",
        description="Pinned TensorFlow environments as Jupyter kernels in containers.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", parents=[common], help="list the catalog's environments").set_defaults(
        func=cmd_list
    )
    p = sub.add_parser(
        "check", parents=[common], help="validate the catalog, pinning and image presence (for CI)"
    )
    p.add_argument("--offline", action="store_true", help="skip the Docker checks")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser(
        "kernelspecs",
        parents=[common],
        help="write the environments' kernelspecs to disk (nbclient, papermill)",
    )
    p.add_argument("--user", action="store_true", help="into the user's Jupyter data dir")
    p.add_argument("--prefix", help="into PREFIX/share/jupyter/kernels")
    p.add_argument("--prune", action="store_true", help="remove tfenv-* specs not in the catalog")
    p.set_defaults(func=cmd_kernelspecs)
    p = sub.add_parser("gc", parents=[common], help="remove kernel containers whose server died")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--all-users", action="store_true", help="not only the current user's")
    p.set_defaults(func=cmd_gc)
    p = sub.add_parser(
        "runtime", parents=[common], help="ipykernel runtimes for images without ipykernel"
    )
    p.add_argument("action", choices=["build", "list"])
    p.add_argument("--python", default="3.11", help="the image's Python version, e.g. 3.11")
    p.add_argument("--runtimes-dir", help="default: the Jupyter data dir")
    p.add_argument("--find-links", action="append", help="a folder of wheels (offline build)")
    p.add_argument("--no-index", action="store_true", help="do not use PyPI")
    p.add_argument("--force", action="store_true", help="rebuild an existing runtime")
    p.set_defaults(func=cmd_runtime)
    p = sub.add_parser(
        "pull",
        parents=[common],
        help="pull environments' images (all, or the ids given) with progress",
    )
    p.add_argument("env", nargs="*", help="environment ids (default: all)")
    p.set_defaults(func=cmd_pull)
    p = sub.add_parser(
        "lock", parents=[common], help="record the digest each tag resolves to in the lock file"
    )
    p.add_argument("env", nargs="*", help="environment ids (default: all)")
    p.add_argument(
        "--from-local",
        action="store_true",
        help="use the local images' digests instead of asking the registries",
    )
    p.set_defaults(func=cmd_lock)
    p = sub.add_parser(
        "build",
        parents=[common],
        help="build derived environments (base + pinned pip packages), offline, tagged by content",
    )
    p.add_argument("env", nargs="*", help="environment ids (default: every derived one)")
    p.add_argument(
        "--push",
        nargs="?",
        const=True,
        default=False,
        metavar="REGISTRY",
        help="push (to the entry's repository, or under REGISTRY) and lock the digest",
    )
    p.add_argument("--rebuild", action="store_true", help="build even when the image is here")
    p.add_argument(
        "--resolve",
        action="store_true",
        help="resolve the dependencies again instead of using the lock file's resolution",
    )
    p.add_argument("--wheel-cache", help="default: <jupyter data dir>/jupyter_tfenv/wheels")
    p.set_defaults(func=cmd_build)
    p = sub.add_parser(
        "probe",
        parents=[common],
        help="what an environment's image holds: TF, CUDA/cuDNN, GPUs, python",
    )
    p.add_argument("env", nargs="*", help="environment ids (default: all)")
    p.add_argument("--refresh", action="store_true", help="ignore the cached result")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds (default 180)")
    p.set_defaults(func=cmd_probe)
    sub.add_parser(
        "broker",
        help="run the tfenv broker, the JupyterHub service that starts users' kernels "
        "(options: `jupyter tfenv broker --help`; see docs/broker.md)",
    )
    add_tensorboard_parser(sub, common)
    p = sub.add_parser("pin", parents=[common], help="check one image reference's pinning")
    p.add_argument("reference")
    p.set_defaults(func=cmd_pin_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else list(argv)
    if raw and raw[0] == "broker":
        # The broker is a traitlets application with its own options (--config, --ip,
        # --port, --TFEnvBroker.x=y): everything after 'broker' is its command line.
        from jupyter_tfenv.broker import main as broker_main  # noqa: PLC0415 - only this command

        broker_main(raw[1:])
        return 0
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except TFEnvError as err:
        if getattr(args, "json", False):
            print(json.dumps({"ok": False, "error": str(err)}))
        else:
            print(f"jupyter tfenv: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
