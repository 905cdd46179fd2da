"""The notebook's folder in the kernel pod: the user's home claim, shared with their server.

A z2jh server keeps the user's home on a claim (``claim-{username}``) mounted at
``/home/jovyan``. With ``kubernetes_mount_home`` the kernel pod mounts the same claim: the
server's ``mount`` (its root folder, or the notebook's folder) as a ``subPath`` relative
to the home, at the same path as on the server, and runs in the notebook's folder (the
start's ``cwd``), as the same uid/gid (``kubernetes_uid``/``kubernetes_gid``, z2jh's
1000:100). How the claim can be shared follows its access modes, read from the API:

- ``ReadWriteMany`` (NFS, CephFS, ...): any node; nothing more;
- ``ReadWriteOnce``: several pods may mount it, but all on one node: the kernel pod gets a
  required pod affinity to the user's server pod (``kubernetes_server_selector``'s labels,
  in the servers' namespace), so the scheduler puts it beside the server. A GPU kernel
  whose server's node has no GPU cannot run there: refused with what to do, when the
  broker may read the server pod and the nodes (else the scheduler's message says it);
- anything else (``ReadWriteOncePod``, ``ReadOnlyMany`` only): refused.

A pod can mount only claims of its own namespace: the claim is looked up in the kernels'
namespace (run kernels in the servers' namespace, or give each user a claim there bound
to the same ReadWriteMany share). Every refusal is a :class:`HomeError` (409) that says
what is wrong and what to set.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jupyter_tfenv.backends.kubernetes.servers import server_label, server_label_problem
from jupyter_tfenv.backends.kubernetes.start import (
    CONNECTION_DIR,
    KubernetesManifestError,
)
from jupyter_tfenv.core.paths import CONTAINER_CHECKPOINT_DIR, CONTAINER_LOG_DIR

if TYPE_CHECKING:
    from jupyter_tfenv.backends.base import KernelStart as StartRequest
    from jupyter_tfenv.backends.kubernetes.backend import KubernetesBackend
    from jupyter_tfenv.core.caller import Caller

RWO = "ReadWriteOnce"
RWX = "ReadWriteMany"
#: The node label the pod affinity puts the kernel beside its server by.
HOSTNAME_KEY = "kubernetes.io/hostname"
#: A claim name: a DNS-1123 subdomain.
_CLAIM_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
#: Folders of the kernel pod the home may not cover.
_RESERVED = (CONNECTION_DIR, CONTAINER_CHECKPOINT_DIR, CONTAINER_LOG_DIR, "/dev", "/proc", "/sys")


class HomeError(KubernetesManifestError):
    """The user's home claim cannot be shared with the kernel pod (409)."""

    http_status = 409


@dataclass(frozen=True)
class HomeOptions:
    """The settings of the home mount (broker traits ``kubernetes_home_*``)."""

    #: The claim's name: {username}, {servername} spelled as the server labels are.
    claim_template: str = "claim-{username}"
    #: Where the server mounts the claim (z2jh: /home/jovyan); cwd is relative to it.
    path: str = "/home/jovyan"
    label_scheme: str = "safe"
    accept_hashed: bool = False


@dataclass(frozen=True)
class HomeMount:
    """What the kernel pod mounts of the home claim, and where it runs."""

    claim: str
    #: The mounted folder relative to the claim's root ("" for the whole claim).
    sub_path: str
    #: Where it appears in the pod (the same path as on the server).
    mount_path: str
    #: The notebook's folder: the kernel's working directory.
    working_dir: str
    #: The claim's access mode as used: ReadWriteOnce or ReadWriteMany.
    access: str
    #: ReadWriteOnce: the server pods' labels the kernel must be beside, and their
    #: namespace; None for ReadWriteMany (any node).
    server_labels: Mapping[str, str] | None = None
    server_namespace: str = ""


def home_claim_name(options: HomeOptions, username: str, server_name: str = "") -> str:
    """The user's home claim, from the template (names spelled as the server labels)."""
    for what, name in (("user name", username), ("server name", server_name)):
        problem = server_label_problem(
            name, options.label_scheme, accept_hashed=options.accept_hashed
        )
        if problem:
            raise HomeError(f"The home claim cannot be named: the {what} {problem}")
    try:
        name = options.claim_template.format(
            username=server_label(username, options.label_scheme),
            servername=server_label(server_name, options.label_scheme) if server_name else "",
        )
    except (KeyError, IndexError, ValueError) as err:
        raise HomeError(
            f"c.TFEnvBroker.kubernetes_home_claim = {options.claim_template!r}: only "
            f"{{username}} and {{servername}} may appear ({err})."
        ) from err
    if len(name) > 253 or not _CLAIM_RE.match(name):
        raise HomeError(
            f"The home claim name '{name}' (c.TFEnvBroker.kubernetes_home_claim = "
            f"{options.claim_template!r} for '{username}') is not a valid claim name "
            "(lower-case letters, digits, '-' and '.'): set the template to the claims' "
            "names (z2jh: singleuser.storage.dynamic.pvcNameTemplate) and "
            "kubernetes_server_label_scheme to how KubeSpawner spells names."
        )
    return name


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def home_folders(home: str, cwd: str, mount: str) -> tuple[str, str, str]:
    """``(sub_path, mount_path, working_dir)`` of a start: the server's ``mount`` (its root
    folder or the notebook's) relative to ``home``, mounted where the server sees it, and
    ``cwd`` the working directory. ``mount`` outside the home (or empty) falls back to
    ``cwd``; ``cwd`` outside the home is refused."""
    if not home.startswith("/") or posixpath.normpath(home) == "/":
        raise HomeError(
            f"c.TFEnvBroker.kubernetes_home_path = {home!r}: set it to the absolute folder "
            "where the servers mount the home claim (z2jh: /home/jovyan), not '/'."
        )
    home = posixpath.normpath(home)
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise HomeError(f"The notebook's folder {cwd!r} is not an absolute path.")
    cwd = posixpath.normpath(cwd)
    if not _inside(cwd, home):
        raise HomeError(
            f"The notebook's folder {cwd} is outside the home {home}, the only folder of "
            "your server the kernel pod can mount: open the notebook from your home, or ask "
            "an admin to set c.TFEnvBroker.kubernetes_home_path to where your server mounts "
            "its home claim."
        )
    mount = posixpath.normpath(mount) if isinstance(mount, str) and mount.startswith("/") else ""
    if not mount or not _inside(mount, home) or not _inside(cwd, mount):
        mount = cwd
    for reserved in _RESERVED:
        if _inside(mount, reserved) or _inside(reserved, mount):
            raise HomeError(
                f"The folder {mount} would cover the kernel pod's own {reserved}: set "
                "c.TFEnvBroker.kubernetes_home_path to where your servers mount the home."
            )
    sub_path = posixpath.relpath(mount, home)
    return ("" if sub_path == "." else sub_path), mount, cwd


#: KubeSpawner's annotation of its objects (claims too): the hub user's exact name.
HUB_USER_ANNOTATION = "hub.jupyter.org/username"


def check_owner(claim: Mapping[str, Any], name: str, namespace: str, username: str) -> None:
    """Refuse a claim whose KubeSpawner annotation names another hub user (two users'
    names can render to one claim name, e.g. through ``{username}{servername}``); a
    claim without the annotation (made by an admin) is taken as the template says."""
    owner = ((claim.get("metadata") or {}).get("annotations") or {}).get(HUB_USER_ANNOTATION)
    if owner is not None and owner != username:
        raise HomeError(
            f"The claim {namespace}/{name} is annotated {HUB_USER_ANNOTATION}={owner!r}, "
            f"not '{username}': it is not mounted into your kernels. Ask an admin to set "
            "c.TFEnvBroker.kubernetes_home_claim so that each user's name gives their own "
            "claim."
        )


def access_of(claim: Mapping[str, Any], name: str, namespace: str) -> str:
    """How the claim can be shared: ReadWriteMany or ReadWriteOnce (bound modes first),
    else a :class:`HomeError` saying why it cannot."""
    status = claim.get("status") or {}
    modes = list(status.get("accessModes") or (claim.get("spec") or {}).get("accessModes") or [])
    if RWX in modes:
        return RWX
    if RWO in modes:
        return RWO
    raise HomeError(
        f"The home claim {namespace}/{name} has the access modes {modes or 'none'}: a kernel "
        "pod cannot share it with the server (ReadWriteOncePod admits one pod, ReadOnlyMany "
        "no writes). Give homes a ReadWriteOnce or ReadWriteMany storage class, or set "
        "c.TFEnvBroker.kubernetes_mount_home = False (kernels then start in /tmp)."
    )


def pod_affinity_term(labels: Mapping[str, str], namespace: str) -> dict[str, Any]:
    """The required podAffinity term that puts a kernel on its server's node."""
    term: dict[str, Any] = {
        "labelSelector": {"matchLabels": dict(labels)},
        "topologyKey": HOSTNAME_KEY,
    }
    if namespace:
        term["namespaces"] = [namespace]
    return term


def with_pod_affinity(
    affinity: Mapping[str, Any] | None, term: Mapping[str, Any]
) -> dict[str, Any]:
    """``affinity`` (the catalog's, the GPU nodes') with ``term`` required too."""
    merged = dict(affinity or {})
    pod_affinity = dict(merged.get("podAffinity") or {})
    required = list(pod_affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or [])
    required.append(dict(term))
    pod_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = required
    merged["podAffinity"] = pod_affinity
    return merged


def allocatable_gpus(node: Mapping[str, Any], resource: str) -> int:
    raw = ((node.get("status") or {}).get("allocatable") or {}).get(resource, "0")
    try:
        return int(str(raw))
    except ValueError:
        return 0


def missing_claim(name: str, namespace: str, server_namespace: str) -> HomeError:
    where = (
        f" A pod mounts only claims of its own namespace: the servers' claims are in "
        f"'{server_namespace}', the kernels run in '{namespace}'. Run the kernels in the "
        f"servers' namespace (c.TFEnvBroker.kubernetes_namespace = '{server_namespace}'), or "
        f"give each user a claim in '{namespace}' bound to the same ReadWriteMany share."
        if server_namespace and server_namespace != namespace
        else ""
    )
    return HomeError(
        f"Your home claim {namespace}/{name} does not exist, so the kernel pod cannot mount "
        "your notebook's folder." + where + " Or set c.TFEnvBroker.kubernetes_home_claim to "
        "the claims' names (z2jh: singleuser.storage.dynamic.pvcNameTemplate), or "
        "kubernetes_mount_home = False (kernels then start in /tmp)."
    )


async def resolve_home(
    *,
    options: HomeOptions,
    username: str,
    server_name: str,
    cwd: str,
    mount: str,
    namespace: str,
    server_namespace: str,
    server_labels: Mapping[str, str],
    read_claim: Callable[[str], Awaitable[Mapping[str, Any] | None]],
    server_pods: Callable[[Mapping[str, str]], Awaitable[list[dict[str, Any]] | None]],
    nodes: Callable[[], Awaitable[list[dict[str, Any]] | str]],
    gpus: int = 0,
    gpu_resource: str = "nvidia.com/gpu",
) -> HomeMount:
    """The :class:`HomeMount` of one start, or a :class:`HomeError`.

    ``read_claim(name)``: the claim in the kernels' namespace (None when missing);
    ``server_pods(labels)``: the user's server pods (None when the broker may not read
    them); ``nodes()``: the cluster's nodes (a string when unreadable)."""
    sub_path, mount_path, working_dir = home_folders(options.path, cwd, mount)
    name = home_claim_name(options, username, server_name)
    claim = await read_claim(name)
    if claim is None:
        raise missing_claim(name, namespace, server_namespace)
    check_owner(claim, name, namespace, username)
    access = access_of(claim, name, namespace)
    home = HomeMount(
        claim=name,
        sub_path=sub_path,
        mount_path=mount_path,
        working_dir=working_dir,
        access=access,
    )
    if access == RWX:
        return home
    servers = await server_pods(server_labels)
    where = server_namespace or namespace
    if servers is not None:
        running = [p for p in servers if (p.get("status") or {}).get("phase") == "Running"]
        if not running:
            labels = ", ".join(f"{k}={v}" for k, v in sorted(server_labels.items()))
            raise HomeError(
                f"Your home claim {name} is ReadWriteOnce, so the kernel pod must run beside "
                f"your server, but no running pod in '{where}' has the labels {labels}. Set "
                "c.TFEnvBroker.kubernetes_server_selector to your server pods' labels "
                "(kubectl get pod --show-labels), or give homes a ReadWriteMany class."
            )
        node_name = (running[0].get("spec") or {}).get("nodeName") or ""
        if gpus and node_name:
            found = await nodes()
            node = (
                next(
                    (n for n in found if (n.get("metadata") or {}).get("name") == node_name),
                    None,
                )
                if not isinstance(found, str)
                else None
            )
            if node is not None and allocatable_gpus(node, gpu_resource) < gpus:
                raise HomeError(
                    f"This environment needs {gpus} GPU(s), but your server runs on node "
                    f"{node_name}, which has {allocatable_gpus(node, gpu_resource)}, and "
                    f"your home claim {name} is ReadWriteOnce: a kernel that mounts it must "
                    "run on that node. Start your server on a GPU node (a GPU profile), or "
                    "ask an admin for ReadWriteMany homes (or kubernetes_mount_home = False)."
                )
    return HomeMount(
        claim=home.claim,
        sub_path=home.sub_path,
        mount_path=home.mount_path,
        working_dir=home.working_dir,
        access=access,
        server_labels=dict(server_labels),
        server_namespace=server_namespace,
    )


#: The scheduler's words when a kernel cannot be put beside its server.
RWO_SCHEDULING_HINT = (
    " The kernel mounts your ReadWriteOnce home claim, so it must run on your server's node "
    "(pod affinity): that node lacks what the kernel asks for. Start your server on a node "
    "that has it (a profile), or ask an admin for ReadWriteMany homes."
)


def scheduling_message(message: str, home: HomeMount | None) -> str:
    """A failed start's message, with why a kernel beside its server could not be placed."""
    if home is None or home.server_labels is None or not message.startswith("No node can"):
        return message
    return message + RWO_SCHEDULING_HINT


async def home_for(
    backend: KubernetesBackend, caller: Caller, request: StartRequest, gpus: int
) -> HomeMount:
    """The backend's :func:`resolve_home` for a start request (its ``cwd`` and ``mount``,
    the server's folders): settings, the API's claim and server pods, the nodes."""
    s = backend.settings
    api = backend.api()
    nodes_of = getattr(backend, "_nodes", None)

    async def nodes() -> list[dict[str, Any]] | str:
        if nodes_of is None:  # pragma: no cover - the backend has it
            return "unknown"
        found: list[dict[str, Any]] | str = await nodes_of(fresh=True)
        return found

    return await resolve_home(
        options=HomeOptions(
            claim_template=s.home_claim,
            path=s.home_path,
            label_scheme=s.server_label_scheme,
            accept_hashed=s.accept_hashed_server_labels,
        ),
        username=caller.name,
        server_name=request.server,
        cwd=request.cwd,
        mount=request.mount,
        namespace=s.namespace,
        server_namespace=s.server_namespace,
        server_labels=backend.server_selector()(caller.name, request.server),
        read_claim=lambda name: backend.call(api.read_claim(name)),
        server_pods=lambda labels: backend.call(api.server_pods(labels)),
        nodes=nodes,
        gpus=gpus,
    )
