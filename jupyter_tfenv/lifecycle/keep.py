"""The server side of kernels that outlive the server (``c.TFEnvApp.keep_kernels_on_stop``).

- :func:`detach_kernels`, when the server stops: the kernels of the kept environments
  leave the kernel manager without a shutdown request; their containers go on running
  and their runtime folders get a *kept* marker (jupyter_tfenv.lifecycle.adoption).
- :func:`adopt_kernels`, when the server starts: this user's running kernel containers
  that no live server holds are started again under their kernel ids, through the kernel
  manager (so that activity tracking, culling and the REST API treat them as any other
  kernel); the provisioner attaches to the container instead of starting one. Those
  kept longer than ``adopt_timeout``, or of environments no longer kept or no longer in
  the catalog, are left to the orphan reaper, which removes them as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.connect import write_connection_file
from jupyter_client.localinterfaces import localhost

from jupyter_tfenv.backends.docker.engine import connect
from jupyter_tfenv.catalog.loading import TFEnvCatalog
from jupyter_tfenv.checkpoints.layout import is_inside
from jupyter_tfenv.errors import TFEnvError
from jupyter_tfenv.kernels import curve
from jupyter_tfenv.kernels.connection import prepare_runtime_root, runtime_name
from jupyter_tfenv.lifecycle import adoption
from jupyter_tfenv.provisioning.provisioner import ADOPT_KWARG, TFEnvKernelProvisioner

KEEP_MODES = ("off", "gpu", "all")


def session_database(runtime_dir: str, root_dir: str, base_url: str) -> str:
    """Where a server that keeps kernels keeps its notebooks' sessions by default.

    jupyter_server keeps sessions (notebook path → kernel id) in memory: after a restart
    the adopted kernels would be there but no notebook would find its own again. A file in
    the server's runtime folder, one per (notebook root, base URL): the next server of the
    same user and root finds it; two servers on different roots do not share one (a
    session manager drops the sessions whose kernel it does not know)."""
    key = hashlib.sha256(f"{os.path.realpath(root_dir)}\0{base_url}".encode()).hexdigest()
    return os.path.join(runtime_dir, f"tfenv-sessions-{key[:16]}.db")


def keeps(mode: str, catalog: TFEnvCatalog) -> Callable[[str], bool]:
    """Whether kernels of an environment id are kept under ``mode``."""

    def kept(env_id: str) -> bool:
        if mode == "all":
            return True
        if mode != "gpu":
            return False
        try:
            return catalog.get(env_id).wants_gpu
        except TFEnvError:
            return False

    return kept


def tfenv_provisioner(manager: Any, kernel_id: str) -> TFEnvKernelProvisioner | None:
    """The tfenv provisioner of a kernel of ``manager`` (None: unknown, or not tfenv's)."""
    try:
        km = manager.get_kernel(kernel_id)
    except KeyError:
        return None
    prov = getattr(km, "provisioner", None)
    return prov if isinstance(prov, TFEnvKernelProvisioner) else None


def known_kernel_ids(manager: Any) -> set[str]:
    """The kernels ``manager`` knows (also those still starting), and the ids their
    containers carry (a kernel taken from the pool: its pool id, as the broker knows it)."""
    known = set(manager.list_kernel_ids()) | set(getattr(manager, "_pending_kernels", None) or ())
    for kernel_id in list(known):
        prov = tfenv_provisioner(manager, kernel_id)
        if prov is not None:
            known.add(prov.container_kernel_id)
    return known


def release(km: Any) -> None:
    """A kernel manager lets go of its kernel without stopping it (a kernel kept for the
    next server, or a pool kernel taken for a notebook)."""
    # A KernelManager that is garbage collected removes the connection file it wrote:
    # the file stays, for the kernel's next holder.
    km._connection_file_written = False
    with contextlib.suppress(Exception):
        km.stop_restarter()
    with contextlib.suppress(Exception):
        km._close_control_socket()
    prov = getattr(km, "provisioner", None)
    if isinstance(prov, TFEnvKernelProvisioner):
        prov.detach()


async def detach_kernels(
    manager: Any, kept: Callable[[str], bool], log: logging.Logger | logging.LoggerAdapter[Any]
) -> list[str]:
    """Take the running kernels of kept environments out of ``manager`` (a
    MappingKernelManager) without shutting them down; their ids."""
    detached = []
    for kernel_id in list(manager.list_kernel_ids()):
        prov = tfenv_provisioner(manager, kernel_id)
        if prov is None or not prov.has_process:
            continue
        env_id = str(prov.environment.get("id", ""))
        if not kept(env_id):
            continue
        try:
            if prov.runtime_dir:
                await asyncio.to_thread(adoption.mark_kept, prov.runtime_dir)
            keep_at_broker = getattr(prov.runner, "keep", None)
            if keep_at_broker is not None:
                await keep_at_broker()  # a kernel pod: the broker marks it kept
        except (OSError, TFEnvError) as err:
            log.warning("tfenv: kernel %s cannot be kept (%s): shutting it down", kernel_id, err)
            continue
        release(manager.get_kernel(kernel_id))
        with contextlib.suppress(Exception):
            manager.stop_watching_activity(kernel_id)
        manager.remove_kernel(kernel_id)
        for name in ("_kernel_connections", "_kernel_ports"):
            with contextlib.suppress(Exception):
                getattr(manager, name).pop(kernel_id, None)
        detached.append(kernel_id)
        log.info(
            "tfenv: kernel %s (%s) keeps running in container %s for the next server "
            "(c.TFEnvApp.keep_kernels_on_stop)",
            kernel_id,
            env_id,
            str(prov.container_id)[:12],
        )
    return detached


def _notebook_path(workdir: str, root_dir: str) -> str:
    """The kernel's working directory relative to the server's root ('' outside it)."""
    if not workdir or not root_dir:
        return ""
    root = os.path.realpath(root_dir)
    if not is_inside(workdir, root):
        return ""
    return os.path.relpath(workdir, root) if workdir != root else ""


async def _adopt_one(
    manager: Any,
    catalog: TFEnvCatalog,
    *,
    kernel_id: str,
    env_id: str,
    adopt: dict[str, Any],
    log: logging.Logger | logging.LoggerAdapter[Any],
    on_adopted: Callable[[str], None] | None = None,
) -> bool:
    try:
        kernel_name = catalog.get(env_id).kernel_name
    except TFEnvError:
        log.warning(
            "tfenv: kernel %s is of environment %r, which the catalog no longer has: not adopted",
            kernel_id,
            env_id,
        )
        return False
    path = _notebook_path(str(adopt.get("workdir") or ""), getattr(manager, "root_dir", ""))
    try:
        await manager.start_kernel(
            kernel_id=kernel_id, kernel_name=kernel_name, path=path, **{ADOPT_KWARG: adopt}
        )
    except Exception as err:
        log.warning("tfenv: kernel %s (%s) could not be adopted: %s", kernel_id, env_id, err)
        return False
    if on_adopted is not None:  # at once, not when the whole start-up adoption is over
        on_adopted(kernel_id)
    await _prime_kernel_info(manager, kernel_id, log)
    log.info("tfenv: adopted kernel %s (%s), left running by a previous server", kernel_id, env_id)
    return True


async def _prime_kernel_info(
    manager: Any, kernel_id: str, log: logging.Logger | logging.LoggerAdapter[Any]
) -> None:
    """Ask the adopted kernel for its kernel_info on the *control* channel.

    jupyter_server asks each new websocket's kernel for kernel_info on the shell channel
    and waits up to a minute for the answer; a kernel adopted while a cell runs (a
    training loop) answers shell requests only after that cell. The control channel
    answers at once, and jupyter_server keeps one kernel_info answer per kernel
    (``_kernel_info_future``), so the first notebook that reconnects is not kept waiting.
    """
    km = manager.get_kernel(kernel_id)
    client = AsyncKernelClient(session=km.session)
    client.load_connection_info(km.get_connection_info())
    client.start_channels(shell=False, iopub=False, stdin=False, hb=False, control=True)
    try:
        request = client.session.msg("kernel_info_request")
        client.control_channel.send(request)
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            left = deadline - asyncio.get_running_loop().time()
            reply = await client.control_channel.get_msg(timeout=max(left, 0.01))
            if reply.get("parent_header", {}).get("msg_id") == request["header"]["msg_id"]:
                break
        info = reply.get("content") or {}
    except Exception as err:  # no answer: the first websocket waits as usual
        log.debug("tfenv: no kernel_info from adopted kernel %s: %s", kernel_id, err)
        return
    finally:
        client.stop_channels()
    if "protocol_version" in info and not hasattr(km, "_kernel_info_future"):
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(info)
        km._kernel_info_future = done


#: How one server finds its kept kernels: :func:`adopt_local` (its own engine's containers)
#: or :func:`adopt_through_broker` (the broker's list); the server's source picks one.
Adopter = Callable[..., Awaitable[list[str]]]


async def adopt_kernels(
    manager: Any,
    catalog: TFEnvCatalog,
    *,
    defaults: TFEnvKernelProvisioner,
    kept: Callable[[str], bool],
    adopt_timeout: float,
    log: logging.Logger | logging.LoggerAdapter[Any],
    adopter: Adopter,
    on_adopted: Callable[[str], None] | None = None,
) -> list[str]:
    """Adopt this user's kernels that a previous server left running; their ids.
    ``adopter`` finds and adopts them where the kernels run (the server's source);
    ``on_adopted(kernel_id)`` is called as each is adopted."""
    adopted = await adopter(
        manager,
        catalog,
        defaults,
        known=known_kernel_ids(manager),
        kept=kept,
        adopt_timeout=adopt_timeout,
        log=log,
        on_adopted=on_adopted,
    )
    log.info("tfenv: looked for kernels of %s to adopt: %d adopted", defaults.owner, len(adopted))
    return adopted


async def adopt_through_broker(
    manager: Any,
    catalog: TFEnvCatalog,
    defaults: TFEnvKernelProvisioner,
    *,
    broker: Any,
    known: set[str],
    kept: Callable[[str], bool],
    adopt_timeout: float,
    log: logging.Logger | logging.LoggerAdapter[Any],
    on_adopted: Callable[[str], None] | None = None,
) -> list[str]:
    """Broker mode: the broker lists only the caller's own kernels; those of this hub
    server name that run are adopted (their runtime folder as the broker reports it:
    asking for the folder again, ``POST .../runtime``, would remove the running kernel's
    sockets)."""
    server = os.environ.get("JUPYTERHUB_SERVER_NAME", "")
    try:
        kernels = await broker.kernels()
    except TFEnvError as err:
        log.warning("tfenv: no kernels to adopt: %s", err)
        return []
    adopted = []
    for kernel in kernels:
        kernel_id = str(kernel.get("kernel_id") or "")
        env_id = str(kernel.get("environment") or "")
        if (
            not kernel_id
            or kernel_id in known
            or kernel.get("server", "") != server
            or kernel.get("status") != "running"
            or not kept(env_id)
        ):
            continue
        try:
            info = await broker.kernel(kernel_id)
        except TFEnvError as err:
            log.warning("tfenv: kernel %s cannot be adopted: %s", kernel_id, err)
            continue
        if info.get("backend") == "kubernetes":
            kept_at = info.get("kept_at")
            if _too_old(
                kept_at if isinstance(kept_at, int | float) else None, adopt_timeout, kernel_id, log
            ):
                continue
            try:
                answer = await broker.adopt_kernel(kernel_id)
                info = {**info, **answer}
                rundir = await asyncio.to_thread(pod_connection_folder, defaults, kernel_id, info)
            except (TFEnvError, OSError) as err:
                log.warning("tfenv: kernel %s cannot be adopted: %s", kernel_id, err)
                continue
        else:
            rundir = str(info.get("runtime_dir") or "")
        if not rundir:
            log.warning(
                "tfenv: kernel %s cannot be adopted: the broker does not say where its "
                "runtime folder is (a broker older than this server)",
                kernel_id,
            )
            continue
        assigned, pool = await asyncio.to_thread(adoption.folder_assignment, rundir)
        # A pod's folder is new: a taken pool pod's notebook id is the broker's (held_as).
        assigned = assigned or (str(info.get("held_as") or "") or None)
        if pool and not assigned:
            continue  # a pool kernel no notebook took: the reaper removes it
        kept_at = await asyncio.to_thread(adoption.kept_since, rundir)
        if _too_old(kept_at, adopt_timeout, kernel_id, log):
            continue  # (a pod's folder is new: its kept time was the broker's, above)
        adopt = {
            "runtime_dir": rundir,
            "workdir": str(info.get("workdir") or ""),
            "container_kernel_id": kernel_id,
            "checkpoints": info.get("checkpoints"),  # a pod's claim (the adopt answer)
        }
        # A kernel taken from the pool runs under the notebook's id, not its label's.
        notebook_kernel = assigned or kernel_id
        if await _adopt_one(
            manager,
            catalog,
            kernel_id=notebook_kernel,
            env_id=env_id,
            adopt=adopt,
            log=log,
            on_adopted=on_adopted,
        ):
            adopted.append(notebook_kernel)
    return adopted


def pod_connection_folder(
    defaults: TFEnvKernelProvisioner, kernel_id: str, conn: dict[str, Any]
) -> str:
    """A kernel pod to adopt: a new connection folder of this server's with the connection
    file, from what the broker answered (ports, and the key from the kernel's Secret).
    The address is loopback here, as at a first start: the provisioner connects to the
    pod's IP once it attached (BrokeredKernel.attach). BLOCKING."""
    ports = conn.get("ports") or {}
    if (
        not isinstance(ports, dict)
        or not {"shell", "iopub", "stdin", "hb", "control"} <= set(ports)
        or not conn.get("key")
        or not conn.get("ip")
    ):
        raise TFEnvError("the broker did not say how to reach its pod (ip, ports, key)")
    root = Path(prepare_runtime_root(defaults.runtime_root))
    rundir = root / runtime_name(kernel_id)
    if rundir.exists():
        shutil.rmtree(rundir)
    rundir.mkdir(mode=0o700)
    write_connection_file(
        str(rundir / adoption.CONNECTION_FILE),
        shell_port=int(ports["shell"]),
        iopub_port=int(ports["iopub"]),
        stdin_port=int(ports["stdin"]),
        hb_port=int(ports["hb"]),
        control_port=int(ports["control"]),
        ip=localhost(),
        key=str(conn["key"]).encode("ascii"),
        transport="tcp",
        signature_scheme=str(conn.get("signature_scheme") or "hmac-sha256"),
        # An encrypted pod's CurveZMQ keys, from its Secret (docs/kubernetes.md).
        **curve_fields(conn),
    )
    if (defaults.uid, defaults.gid) != (os.getuid(), os.getgid()):
        for path in (rundir, rundir / adoption.CONNECTION_FILE):
            os.chown(path, defaults.uid, defaults.gid)
    return str(rundir)


def curve_fields(conn: dict[str, Any]) -> dict[str, Any]:
    """write_connection_file's CurveZMQ arguments for the broker's adopt answer."""
    keys = curve.keys_from_connection(conn)
    if keys is None:
        return {}
    return {"curve_publickey": keys.public.encode(), "curve_secretkey": keys.secret.encode()}


async def adopt_local(
    manager: Any,
    catalog: TFEnvCatalog,
    defaults: TFEnvKernelProvisioner,
    *,
    known: set[str],
    kept: Callable[[str], bool],
    adopt_timeout: float,
    log: logging.Logger | logging.LoggerAdapter[Any],
    on_adopted: Callable[[str], None] | None = None,
) -> list[str]:
    """Local mode: this owner's kernel containers that no live server holds."""
    adopted = []
    try:
        client = await asyncio.to_thread(connect, defaults.docker_timeout)
        candidates = await asyncio.to_thread(
            adoption.find_candidates, client, defaults.owner, defaults.runtime_root, defaults.uid
        )
    except TFEnvError as err:
        log.warning("tfenv: no kernels to adopt: %s", err)
        return []
    for cand in candidates:
        if cand.kernel_id in known or not kept(cand.environment):
            continue
        if _too_old(cand.kept_at, adopt_timeout, cand.kernel_id, log):
            continue
        adopt = {
            "container_id": cand.container_id,
            "runtime_dir": cand.runtime_dir,
            "workdir": cand.workdir,
            "container_kernel_id": cand.container_kernel_id,
        }
        if await _adopt_one(
            manager,
            catalog,
            kernel_id=cand.kernel_id,
            env_id=cand.environment,
            adopt=adopt,
            log=log,
            on_adopted=on_adopted,
        ):
            adopted.append(cand.kernel_id)
    return adopted


def _too_old(
    kept_at: float | None,
    adopt_timeout: float,
    kernel_id: str,
    log: logging.Logger | logging.LoggerAdapter[Any],
) -> bool:
    if kept_at is None or adopt_timeout <= 0:
        return False
    age = time.time() - kept_at
    if age <= adopt_timeout:
        return False
    log.warning(
        "tfenv: kernel %s was kept %.0f s ago, longer than c.TFEnvApp.adopt_timeout "
        "(%.0f s): not adopted, it is removed",
        kernel_id,
        age,
        adopt_timeout,
    )
    return True
