"""Everything that talks to the Docker engine, and the hardened container spec.

The spec builder (:func:`container_spec`) is a pure function so that every hardening
default can be read in one place and unit-tested; the functions that call the docker SDK
are blocking and are always run in a thread by their async callers.
"""

# Longer than 600 lines: the one module that turns a request into the hardened container
# spec and Docker errors into actionable messages (pure functions, tested together);
# DockerBackend and the local provisioner both build on it.

from __future__ import annotations

import asyncio
import getpass
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound
from docker.types import DeviceRequest, Mount

from jupyter_tfenv.backends.docker import gpu_alloc
from jupyter_tfenv.backends.docker.gpu_alloc import Holding
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.core.containers import (  # noqa: F401 - importable from here too
    SERVER_HOST,
    SERVER_INSTANCE,
    SERVER_PID,
    SERVER_START,
    hardening,
    process_start_time,
    remove_quietly,
    server_labels,
    tail_logs,
)
from jupyter_tfenv.core.labels import (
    LABEL_BROKER,
    LABEL_ENVIRONMENT,
    LABEL_IMAGE_ID,
    LABEL_IMAGE_REF,
    LABEL_KERNEL_ID,
    LABEL_OWNER,
    LABEL_RUNTIME_DIR,
    LABEL_SERVER_HOST,
    LABEL_SERVER_INSTANCE,
    LABEL_SERVER_PID,
    LABEL_SERVER_START,
    choices_label,
)
from jupyter_tfenv.core.paths import CONTAINER_LAUNCHER, CONTAINER_RUNTIMES
from jupyter_tfenv.errors import DockerUnavailableError, KernelStartError, unreachable_error
from jupyter_tfenv.kernels.runtimes import runtime_build_hint

LAUNCHER_PATH = Path(__file__).parents[2] / "kernels" / "in_container" / "launch.py"


def launcher_command(python: str, connection_file: str) -> list[str]:
    """The kernel container's command: the launcher, run by the image's ``python -I``.

    Isolated (``-I``): no user site-packages, no ``usercustomize``, no ``PYTHON*``
    variables, no script folder on ``sys.path``, so no code of the user's runs before
    the launcher's own (launch.py gives the kernel the user's site and ``PYTHONPATH``
    back after its own setup).
    """
    return [python, "-I", CONTAINER_LAUNCHER, "-f", connection_file]


def isolated_launcher(cmd: list[str]) -> list[str]:
    """``cmd`` with ``-I`` before the launcher when it is missing (kernelspecs written by
    an older version run ``python /opt/tfenv/launch.py …``)."""
    if CONTAINER_LAUNCHER in cmd[1:] and "-I" not in cmd[1 : cmd.index(CONTAINER_LAUNCHER, 1)]:
        at = cmd.index(CONTAINER_LAUNCHER, 1)
        return [*cmd[:at], "-I", *cmd[at:]]
    return list(cmd)


#: Printed by the launcher when the image's python has no ipykernel and no runtime fits.
NO_IPYKERNEL_MARK = "TFENV-NO-IPYKERNEL"


def default_owner() -> str:
    """The notebook user's name: the hub's user when under JupyterHub, else the login."""
    return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()


def safe_name(value: str, limit: int = 40) -> str:
    """A Docker-name-safe rendering of a user or environment name."""
    cleaned = re.sub(r"[^a-zA-Z0-9_.-]+", "-", value).strip("-.") or "x"
    return cleaned[:limit]


def connect(timeout: float = 60.0) -> docker.DockerClient:
    """A docker client that has answered a ping, or ``DockerUnavailableError``."""
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = docker.from_env(timeout=int(timeout))
        client.ping()
    except (DockerException, requests.exceptions.RequestException) as err:
        reason = str(err)
        if "Permission denied" in reason or "PermissionError" in reason:
            hint = (
                "The server's user may not use the Docker socket. On a single-user machine "
                "add it to the 'docker' group; on a shared server use the tfenv broker "
                "instead of giving users the socket (it is root on the host)."
            )
            raise DockerUnavailableError(
                f"Cannot reach the Docker engine at {where}: {reason}. {hint}"
            ) from err
        raise unreachable_error(err, where) from err
    return client


_SHARED: dict[tuple[str, int], docker.DockerClient] = {}
_SHARED_LOCK = threading.Lock()


def shared_client(timeout: float = 60.0) -> docker.DockerClient:
    """One pinged client per Docker host and process (a new client costs two API calls)."""
    key = (os.environ.get("DOCKER_HOST", ""), int(timeout))
    with _SHARED_LOCK:
        client = _SHARED.get(key)
        if client is None:
            client = _SHARED[key] = connect(timeout)
        return client


def forget_shared_client(client: docker.DockerClient) -> None:
    """Drop a client whose engine stopped answering, so the next call reconnects."""
    with _SHARED_LOCK:
        for key, value in list(_SHARED.items()):
            if value is client:
                del _SHARED[key]


@dataclass(frozen=True)
class KernelRequest:
    """Everything about one kernel launch that is not in the catalog entry."""

    kernel_id: str
    cmd: list[str]
    uid: int
    gid: int
    owner: str
    workdir: str
    notebook_mount: str | None
    runtime_dir: str
    runtimes_dir: str | None
    image_id: str
    environment: dict[str, str]
    transport: str = "ipc"
    memory: int | None = None
    pids: int | None = None
    shm_size: int | None = None
    read_only_rootfs: bool = False
    #: Checkpoint and log storage: mounts and the variables that announce them.
    extra_mounts: tuple[Any, ...] = ()
    extra_env: dict[str, str] = field(default_factory=dict)
    #: Labels added to the container's own (the broker's owner uid and broker name).
    extra_labels: dict[str, str] = field(default_factory=dict)
    #: Where the notebook folder is mounted from, when not from ``notebook_mount`` itself:
    #: the broker's staging mount of the folder it checked (mountcheck.StagedMounts).
    notebook_source: str | None = None
    #: The device ids the GPU allocator picked (jupyter_tfenv.backends.docker.gpu_alloc);
    #: None: ``gpus``
    #: of the catalog goes to Docker as written.
    gpu_devices: tuple[str, ...] | None = None


def gpu_device_requests(
    env: Environment, devices: tuple[str, ...] | None = None
) -> list[DeviceRequest]:
    """``gpus`` of the catalog → Docker device requests (none for CPU environments).

    ``devices``: the allocated ids, always passed as ids: Docker's NVIDIA driver turns a
    count into "the first N devices", the same ones for every kernel.
    """
    if env.gpus == "none":
        return []
    if devices:
        return [DeviceRequest(device_ids=list(devices), capabilities=[["gpu"]])]
    if env.gpus == "all":
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if isinstance(env.gpus, int):
        return [DeviceRequest(count=env.gpus, capabilities=[["gpu"]])]
    return [DeviceRequest(device_ids=list(env.gpus), capabilities=[["gpu"]])]


def container_env(env: Environment, req: KernelRequest) -> dict[str, str]:
    """The container's whole environment: an allow-list, never the server's environment."""
    values = dict(req.environment)
    values.update(env.env)
    values.update(
        {
            "TFENV_ENVIRONMENT": env.id,
            "TFENV_IMAGE": env.image,
            "TFENV_KERNEL_ID": req.kernel_id,
        }
    )
    values.update(req.extra_env)
    if not env.wants_gpu:
        # CPU environments see no GPU even where the NVIDIA runtime is the default one
        # and the image sets NVIDIA_VISIBLE_DEVICES=all (the -gpu images do).
        values["NVIDIA_VISIBLE_DEVICES"] = "void"
        values["CUDA_VISIBLE_DEVICES"] = ""
    return values


def container_labels(env: Environment, req: KernelRequest) -> dict[str, str]:
    return {
        **req.extra_labels,
        LABEL_OWNER: req.owner,
        LABEL_KERNEL_ID: req.kernel_id,
        **server_labels(),
        LABEL_ENVIRONMENT: env.id,
        LABEL_IMAGE_ID: req.image_id,
        LABEL_IMAGE_REF: env.image,
        LABEL_RUNTIME_DIR: req.runtime_dir,
        **choices_label(env.chosen),  # read back by a server that adopts the kernel
    }


def container_spec(env: Environment, req: KernelRequest) -> dict[str, Any]:
    """Keyword arguments for ``client.containers.run``: the hardened kernel container.

    Non-root, no capabilities, no privilege escalation, an init process that forwards
    signals, pids/memory limits, no restart policy (the kernel restarter owns restarts),
    nothing published on any network, and only the mounts the kernel needs.
    """
    if req.uid == 0:
        raise KernelStartError(
            "Refusing to run a kernel container as root (uid 0). Run the server as your "
            "own user, or set c.DockerKernelProvisioner.uid (and allow_root only if you "
            "really mean it)."
        )
    mounts = [
        Mount(req.runtime_dir, req.runtime_dir, type="bind", read_only=False),
        Mount(CONTAINER_LAUNCHER, str(LAUNCHER_PATH), type="bind", read_only=True),
    ]
    if req.runtimes_dir and os.path.isdir(req.runtimes_dir):
        mounts.append(Mount(CONTAINER_RUNTIMES, req.runtimes_dir, type="bind", read_only=True))
    if req.notebook_mount:
        source = req.notebook_source or req.notebook_mount
        mounts.append(Mount(req.notebook_mount, source, type="bind", read_only=False))
    mounts.extend(req.extra_mounts)
    for extra in env.mounts:
        mounts.append(Mount(extra.target, extra.source, type=extra.type, read_only=extra.read_only))
    network = env.network
    if req.transport == "tcp":
        # TCP kernels bind 127.0.0.1 of the host's network namespace; nothing is published.
        network = "host"
    spec: dict[str, Any] = {
        "image": req.image_id,
        "command": req.cmd,
        # A fresh suffix per launch: a restart must not collide with a dying container.
        "name": f"tfenv-{safe_name(req.owner, 24)}-{req.kernel_id[:12]}-{secrets.token_hex(3)}",
        "hostname": f"tfenv-{safe_name(env.id, 40)}",
        "user": f"{req.uid}:{req.gid}",
        "working_dir": req.workdir,
        "environment": container_env(env, req),
        "labels": container_labels(env, req),
        "mounts": mounts,
        "network_mode": network,
        **hardening(),
        "pids_limit": env.pids or req.pids,
        "detach": True,
        "stdin_open": False,
        "tty": False,
        "read_only": req.read_only_rootfs,
    }
    memory = env.memory or req.memory
    if memory:
        spec["mem_limit"] = memory
        # No swap beyond the memory limit: an OOM should be an OOM, not a crawl.
        spec["memswap_limit"] = memory
    if env.cpus:
        spec["nano_cpus"] = int(env.cpus * 1e9)
    shm = env.shm_size or req.shm_size
    if shm:
        spec["shm_size"] = shm
    requests = gpu_device_requests(env, req.gpu_devices)
    if requests:
        spec["device_requests"] = requests
    return spec


def explain_api_error(err: APIError, env: Environment) -> str:
    """Docker's error for a failed create/start → what is wrong and what to do."""
    text = str(err.explanation or err)
    lowered = text.lower()
    if "could not select device driver" in lowered or "nvidia-container-cli" in lowered:
        return (
            f"Environment '{env.id}' asks for GPUs ({env.gpu_label}), but this Docker engine "
            "has no NVIDIA runtime (Docker said: " + text.strip() + "). Install the NVIDIA "
            "driver and the NVIDIA Container Toolkit on the host and restart Docker, or pick "
            "a CPU environment."
        )
    if "executable file not found" in lowered or (
        "no such file or directory" in lowered and "exec" in lowered
    ):
        return explain_missing_python(env, text.strip())
    if "no such image" in lowered:
        return image_missing_message(env)
    if "unknown or invalid runtime" in lowered:
        return f"Docker has no such runtime: {text.strip()}."
    return f"Docker refused to start the kernel container for '{env.id}': {text.strip()}"


def explain_missing_python(env: Environment, said: str) -> str:
    return (
        f"The image {env.image} has no '{env.python}' to run the kernel with (the container "
        f"said: {said}). Set 'python' in the catalog entry to the image's interpreter (for "
        "example /usr/local/bin/python3), or use an image that has Python."
    )


@dataclass(frozen=True)
class StartExit:
    """Why a kernel container exited before its sockets were bound: for the user."""

    message: str
    status: int  # 400: the environment cannot run as declared; 500: it failed
    reason: str
    logs: str


def explain_start_exit(
    env: Environment, state: dict[str, Any], logs: str, *, admin: bool = False
) -> StartExit:
    """The message for a kernel container that exited while starting; ``state`` is what
    ``exit_state`` answered (``exit_code``, ``oom_killed``, ``removed``).

    Recognizes the launcher's no-ipykernel mark and docker-init's ``exec … failed``, each
    with the fix; ``admin``: the fix is on a host the user cannot reach (the broker's); a
    container removed or SIGKILLed (137, not the memory limit) by someone else before the
    kernel answered is a 409 (``docker rm -f`` kills first: either may be seen).
    """
    code, oom_killed = state.get("exit_code"), bool(state.get("oom_killed"))
    if state.get("removed") or (code == 137 and not oom_killed):
        removed = bool(state.get("removed"))
        what = "removed" if removed else "killed (SIGKILL, exit code 137)"
        return StartExit(
            f"The kernel container of '{env.id}' was {what} while the kernel started, by "
            "something other than this kernel's server (`docker rm -f`, `docker kill`, a "
            "clean-up job, a second server or broker with the same labels on this engine, "
            "the host out of memory). Start the kernel again; if it happens again, find "
            "what removes or kills containers on this engine.",
            409,
            "container removed" if removed else "container killed",
            "",
        )
    if NO_IPYKERNEL_MARK in logs:
        line = next(ln for ln in logs.splitlines() if NO_IPYKERNEL_MARK in ln)
        facts = dict(p.split("=", 1) for p in line.split()[1:] if "=" in p)
        python = facts.get("python", "?")
        host = " on the broker's host. Ask an admin:" if admin else "."
        return StartExit(
            f"The image {env.image} has no ipykernel for its Python {python}, and no tfenv "
            f"kernel runtime for it is built{host} "
            + runtime_build_hint(facts.get("python", "3"))
            + " Or use an image that has ipykernel (the -jupyter tags).",
            400,
            "no ipykernel",
            "",
        )
    if code in (126, 127) and f"exec {env.python} failed" in logs:
        # docker-init could not exec the interpreter: not there (127) or not executable.
        return StartExit(explain_missing_python(env, logs.strip()), 400, "no python", "")
    if oom_killed:
        return StartExit(
            f"The kernel container of '{env.id}' ran out of memory while starting; raise "
            "resources.memory in the catalog entry.",
            500,
            "oom",
            logs,
        )
    return StartExit(
        f"The kernel container of '{env.id}' exited with code {code} while starting.",
        500,
        "kernel exited",
        logs,
    )


def image_missing_message(env: Environment) -> str:
    if env.derived is not None:
        return (
            f"The environment '{env.id}' is not built yet on this Docker engine (image "
            f"{env.image}, packages on {env.derived.base_image}). Build it: `jupyter tfenv "
            f"build {env.id}` (or `jupyter tfenv pull {env.id}` when it was pushed and "
            "locked). Kernel starts never build or pull."
        )
    return (
        f"The image {env.image} of environment '{env.id}' is not on this Docker engine. "
        f"Pull it first: `jupyter tfenv pull {env.id}` (or `docker pull {env.image}`). "
        "Kernel starts never pull, so that a large image cannot run into the start timeout."
    )


def resolve_image(client: docker.DockerClient, env: Environment) -> Any:
    """The local image of ``env`` (by digest when pinned by digest), or a clear error."""
    try:
        return client.images.get(env.image)
    except ImageNotFound:
        raise KernelStartError(image_missing_message(env), status_code=400) from None
    except APIError as err:
        raise KernelStartError(explain_api_error(err, env)) from err


def server_alive(labels: dict[str, str]) -> bool:
    """Whether the server that started a container (per its labels) still runs here."""
    if labels.get(LABEL_SERVER_HOST) != SERVER_HOST:
        return True  # another machine's server: not ours to judge
    if labels.get(LABEL_SERVER_INSTANCE) == SERVER_INSTANCE:
        return True
    try:
        pid = int(labels.get(LABEL_SERVER_PID, ""))
    except ValueError:
        return False
    start = labels.get(LABEL_SERVER_START, "")
    current = process_start_time(pid)
    if not current:
        return False
    return not start or current == start


@dataclass(frozen=True)
class ReapedContainer:
    name: str
    kernel_id: str
    environment: str
    reason: str


def tfenv_containers(client: docker.DockerClient, owner: str | None = None) -> list[Any]:
    filters = [LABEL_KERNEL_ID]
    if owner is not None:
        filters.append(f"{LABEL_OWNER}={owner}")
    return list_containers(client, filters)


def gpu_holdings(client: docker.DockerClient) -> list[Holding]:
    """What every live kernel container on the engine holds of the allocated GPUs, from
    their labels (one API call, no inspect). BLOCKING."""
    rows = client.api.containers(all=True, filters={"label": [gpu_alloc.LABEL_GPU_DEVICES]})
    holdings = []
    for row in rows:
        if str(row.get("State", "")).lower() not in ("created", "running", "restarting"):
            continue
        holding = gpu_alloc.holding_from_labels(
            str(row.get("Id", "")), row.get("Labels") or {}, created=int(row.get("Created") or 0)
        )
        if holding is not None:
            holdings.append(holding)
    return holdings


_INVENTORY: dict[tuple[str, ...], tuple[float, list[gpu_alloc.Device]]] = {}
_INVENTORY_SECONDS = 30.0


def gpu_inventory(configured: Iterable[str]) -> list[gpu_alloc.Device]:
    """The devices kernels may get: ``gpu_devices`` when set, else NVML's (read at most
    every 30 s). BLOCKING."""
    key = tuple(configured)
    if key:
        return gpu_alloc.inventory_from_config(key)
    cached = _INVENTORY.get(key)
    if cached is not None and time.monotonic() - cached[0] < _INVENTORY_SECONDS:
        return cached[1]
    from jupyter_tfenv.backends.docker.gpu import gpu_overview  # noqa: PLC0415 - gpu imports this module

    devices = gpu_alloc.inventory_from_nvml(gpu_overview(None))
    _INVENTORY[key] = (time.monotonic(), devices)
    return devices


def allocate_gpus(
    client: docker.DockerClient,
    env: Environment,
    configured: Iterable[str],
    *,
    viewer: str | None,
    placement: str,
    prefer: tuple[str, ...] = (),
    unusable: Mapping[str, str] | None = None,
) -> tuple[tuple[str, ...] | None, dict[str, str]]:
    """The device ids for a start of ``env`` and the labels that record them (call under
    :func:`gpu_alloc.start_lock`). ``(None, {})``: Docker gets ``gpus`` as written.
    Raises :class:`gpu_alloc.GpuUnavailableError`. BLOCKING."""
    if not env.wants_gpu or env.gpus == "all":
        return None, {}
    devices = gpu_inventory(configured)
    if not devices:
        return None, {}
    policy = gpu_alloc.Policy.of(env.gpu_sharing, env.gpu_kernels_per_device)
    chosen = gpu_alloc.pick(
        env.gpus,
        policy,
        devices,
        gpu_holdings(client),
        env_id=env.id,
        viewer=viewer,
        placement=placement,
        prefer=prefer,
        unusable=unusable,
    )
    if chosen is None:
        return None, {}
    return chosen, gpu_alloc.labels_for(chosen, policy, time.time_ns())


def recheck_gpus(client: docker.DockerClient, container_id: str) -> list[Holding]:
    """The earlier holdings that the new container ``container_id`` overcommits (another
    process started on the same devices at the same time): the new one must go. BLOCKING."""
    holdings = gpu_holdings(client)
    mine = next((h for h in holdings if h.container_id == container_id), None)
    return gpu_alloc.conflicts(mine, holdings) if mine is not None else []


async def run_with_gpus(
    client: docker.DockerClient,
    env: Environment,
    spec: dict[str, Any],
    run: Callable[[dict[str, Any]], Awaitable[Any]],
    *,
    configured: Iterable[str],
    viewer: str | None,
    placement: str,
    prefer: tuple[str, ...] = (),
    wait: float = 0.0,
    unusable: Mapping[str, str] | None = None,
) -> tuple[Any, tuple[str, ...]]:
    """Start the container of ``spec`` (through the caller's ``run``) on devices picked
    for it: the local provisioner's and the broker's one way to start a GPU kernel.

    Under the allocation lock: read the engine's holdings, pick, put the ids and their
    labels into ``spec``, create the container; then re-check the engine, and remove the
    container again when a start elsewhere got the same device first. Returns the container
    and its device ids (empty when nothing was allocated). When no device is free, tries
    again every second for up to ``wait`` seconds (the lock is not held meanwhile), then
    raises :class:`gpu_alloc.GpuUnavailableError`.
    """
    if not env.wants_gpu or env.gpus == "all":
        return await run(spec), ()
    deadline = time.monotonic() + max(0.0, wait)
    while True:
        try:
            return await _run_on_free_gpus(
                client,
                env,
                spec,
                run,
                configured=list(configured),
                viewer=viewer,
                placement=placement,
                prefer=prefer,
                unusable=unusable,
            )
        except gpu_alloc.GpuUnavailableError as err:
            left = deadline - time.monotonic()
            if err.status != 409 or left <= 0:
                if wait > 0 and err.status == 409:
                    err.message += f" (Waited {wait:g} s for one.)"
                raise
        await asyncio.sleep(min(1.0, left))


async def _run_on_free_gpus(
    client: docker.DockerClient,
    env: Environment,
    spec: dict[str, Any],
    run: Callable[[dict[str, Any]], Awaitable[Any]],
    *,
    configured: list[str],
    viewer: str | None,
    placement: str,
    prefer: tuple[str, ...],
    unusable: Mapping[str, str] | None,
) -> tuple[Any, tuple[str, ...]]:
    async with gpu_alloc.start_lock():
        chosen, labels = await asyncio.to_thread(
            allocate_gpus,
            client,
            env,
            configured,
            viewer=viewer,
            placement=placement,
            prefer=prefer,
            unusable=unusable,
        )
        if chosen:
            spec = {
                **spec,
                "labels": {**spec.get("labels", {}), **labels},
                "device_requests": gpu_device_requests(env, chosen),
            }
        container = await run(spec)
        if not chosen:
            return container, ()
        taken = await asyncio.to_thread(recheck_gpus, client, container.id)
    if taken:
        await asyncio.to_thread(remove_quietly, container)
        devices = sorted({d for h in taken for d in h.devices if d in chosen})
        raise gpu_alloc.GpuUnavailableError(
            f"GPU {','.join(devices)} was given to another kernel at the same moment "
            f"(kernel {taken[0].kernel_id[:8]}); start '{env.id}' again."
        )
    return container, chosen


def gpu_allocation(
    client: docker.DockerClient, configured: Iterable[str], *, viewer: str | None
) -> list[dict[str, Any]]:
    """Each device kernels may get, with the kernels that hold it (``GET /tfenv/gpus``).
    BLOCKING."""
    return gpu_alloc.table(gpu_inventory(configured), gpu_holdings(client), viewer=viewer)


def list_containers(client: docker.DockerClient, labels: list[str]) -> list[Any]:
    """Containers with all of ``labels``. The SDK lists, then inspects each one; a
    container removed in between (a kernel shut down meanwhile) makes that a 404, so
    the listing is made again."""
    for _ in range(4):
        try:
            return list(client.containers.list(all=True, filters={"label": labels}))
        except docker.errors.NotFound:
            continue
    return list(client.containers.list(all=True, filters={"label": labels}))


def reap_orphans(
    client: docker.DockerClient,
    owner: str | None,
    *,
    runtime_roots: Iterable[str] = (),
    dry_run: bool = False,
    is_held: Callable[[dict[str, str]], bool] = server_alive,
) -> list[ReapedContainer]:
    """Remove kernel containers whose server is gone (and their runtime folders).

    ``is_held(labels)`` says whether a live server holds a container (default: the one
    that started it runs; ``adoption.held_by_live_server`` also knows adopted kernels).
    """
    roots = [os.path.realpath(r) for r in runtime_roots]
    reaped = []
    for container in tfenv_containers(client, owner):
        labels = container.labels or {}
        if LABEL_BROKER in labels:
            continue  # the broker's kernels outlive broker restarts; it reaps nothing
        if is_held(labels):
            continue
        reaped.append(
            ReapedContainer(
                name=container.name,
                kernel_id=labels.get(LABEL_KERNEL_ID, ""),
                environment=labels.get(LABEL_ENVIRONMENT, ""),
                reason=f"server pid {labels.get(LABEL_SERVER_PID, '?')} is gone",
            )
        )
        if dry_run:
            continue
        remove_quietly(container)
        rundir = os.path.realpath(labels.get(LABEL_RUNTIME_DIR, "") or "/nonexistent")
        if any(os.path.commonpath([rundir, root]) == root and rundir != root for root in roots):
            shutil.rmtree(rundir, ignore_errors=True)
    return reaped
