"""Kubernetes tier 2 harness: the generated kernel objects run as a real pod under podman.

``podman kube play`` (Debian's podman 4.3.1) plays the Secret, claim and Pod that
:func:`jupyter_tfenv.backends.kubernetes.manifests.kernel_objects` generates, on a podman bridge
network, so that the kernel has an IP address of its own and is reached there over TCP.

What podman 4.3.1 cannot take as generated is adapted in :meth:`PodmanSession.play_kernel`,
by one small function per difference, each saying why. None of them touches a security context, the
command, the image or the variables; where the sandbox itself (not the objects) needs a
setting, :func:`containers_conf` says so.

Everything a test creates (pods, secrets, volumes, the network) goes in
:class:`PodmanSession`'s finalizer. Podman must work where these tests run as root (CI);
:func:`unusable_reason` says why not elsewhere, for a skip.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import fcntl
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jupyter_tfenv.backends.kubernetes import manifests as m

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import build_test_images  # noqa: E402  (scripts/ is not a package)

#: The image with TF 2.20 and ipykernel, as scripts/build_test_images.py names it.
TF_IMAGE_KEY = "tensorflow:2.20.0-jupyter"
TF_IMAGE = build_test_images.SPECS[TF_IMAGE_KEY].ref
#: Names of everything this harness creates start with this (cleanup finds them by it).
NAME_PREFIX = "tfenv-"
#: What the harness's own (non-generated) objects are called: the network, the prepare pod.
OWN_PREFIX = "tfenv-tier2-"
PLAY_TIMEOUT = 180


class PodmanError(RuntimeError):
    """A podman command failed; the message has its output."""


# --- podman itself ---------------------------------------------------------------------


def _cgroup_v2_controllers() -> list[str]:
    """The controllers of a hybrid host's cgroup2 hierarchy (empty: none or pure v1/v2)."""
    path = Path("/sys/fs/cgroup/unified/cgroup.controllers")
    try:
        return path.read_text().split()
    except OSError:
        return []


def containers_conf(directory: Path) -> Path:
    """A containers.conf for this host (podman reads only it: ``CONTAINERS_CONF``).

    Neither setting changes what a pod's containers may do; both are the sandbox's:

    * ``default_ulimits``: podman asks for nofile/nproc limits above this process's hard
      limits (1048576), which needs CAP_SYS_RESOURCE, which a sandboxed root may lack
      (``setrlimit RLIMIT_NOFILE: Operation not permitted``). The current hard limits are
      passed on instead; nproc at most ``kernel.pid_max``, above which runc's setrlimit
      is refused here as well.
    * ``runtime = "runc"`` on a hybrid cgroup host whose cgroup2 hierarchy has controllers
      (here: hugetlb): crun 1.8 refuses such hosts ("cgroups in hybrid mode not
      supported"); runc (Docker's runtime, installed with docker.io) runs there.
    """
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    try:
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    except (OSError, ValueError):
        pid_max = 32768
    limits = []
    if nofile != resource.RLIM_INFINITY:
        limits.append(f"nofile={nofile}:{nofile}")
    nproc = pid_max if nproc == resource.RLIM_INFINITY else min(nproc, pid_max)
    limits.append(f"nproc={nproc}:{nproc}")
    lines = ["[containers]", f"default_ulimits = {json.dumps(limits)}"]
    if _cgroup_v2_controllers() and shutil.which("runc"):
        lines += ["[engine]", 'runtime = "runc"']
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "containers.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


_CONF_DIR = Path(tempfile.gettempdir()) / "tfenv-tier2-podman"


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(containers_conf(_CONF_DIR))}


def podman(
    *args: str, check: bool = True, timeout: float = PLAY_TIMEOUT, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """``podman ARGS`` (with this host's containers.conf); raises PodmanError on failure."""
    result = subprocess.run(
        ["podman", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        env=podman_env(),
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise PodmanError(
            f"podman {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def unusable_reason() -> str | None:
    """Why podman cannot run pods here (None: it can)."""
    if shutil.which("podman") is None:
        return "podman is not installed (scripts/debian-packages.txt lists it)"
    if os.geteuid() != 0:
        return "tier 2 runs rootful podman (bridge networks, other uids): run as root"
    result = podman("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False, timeout=60)
    if result.returncode != 0:
        return f"podman info failed: {result.stderr.strip()}"
    return None


# --- the image -------------------------------------------------------------------------


def _docker_image_id(ref: str) -> str:
    out = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", ref],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise PodmanError(f"the Docker engine has no image {ref}: {out.stderr.strip()}")
    return out.stdout.strip().removeprefix("sha256:")


def podman_image_id(ref: str) -> str | None:
    result = podman("image", "inspect", "--format", "{{.Id}}", ref, check=False, timeout=60)
    return result.stdout.strip().removeprefix("sha256:") if result.returncode == 0 else None


def ensure_image(ref: str = TF_IMAGE) -> str:
    """``ref`` in podman's storage with the Docker engine's image id (``docker save | podman
    load`` only when podman has another or none); returns the id. Serialized by a lock."""
    build_test_images.ensure_images([ref])
    want = _docker_image_id(ref)
    _CONF_DIR.mkdir(parents=True, exist_ok=True)
    with open(_CONF_DIR / "load.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if podman_image_id(ref) == want:
            return want
        save = subprocess.Popen(["docker", "save", ref], stdout=subprocess.PIPE)
        try:
            load = subprocess.run(
                ["podman", "load"],
                stdin=save.stdout,
                capture_output=True,
                text=True,
                env=podman_env(),
                timeout=900,
                check=False,
            )
        finally:
            if save.stdout is not None:
                save.stdout.close()
            save.wait(60)
        if save.returncode != 0 or load.returncode != 0:
            raise PodmanError(f"docker save {ref} | podman load failed: {load.stderr}")
        got = podman_image_id(ref)
        if got != want:
            raise PodmanError(f"podman has {ref} as {got} after loading, Docker as {want}")
        return want


# --- adapting the generated objects to podman 4.3.1 -------------------------------------


def drop_network_policy(objects: m.KernelObjects) -> list[dict[str, Any]]:
    """Secret, claim, pod: ``podman kube play`` has no NetworkPolicy ("does not contain any
    supported kube kind"), and nothing would enforce one. (Tier 3 checks the policy.)"""
    return [copy.deepcopy(o) for o in objects.all() if o["kind"] != "NetworkPolicy"]


def secret_for_podman(secret: dict[str, Any]) -> bytes:
    """The Secret as podman 4.3.1's secret volumes need it stored: values decoded.

    podman 4.3.1 writes a secret volume's files from the *stored* Secret's ``data``
    values as they are (``VolumeFromSecret`` reads them as strings), and ``kube play`` of
    a Secret stores them base64-encoded: the kernel would read base64, not JSON. The
    harness stores the Secret with ``podman secret create`` instead, its values decoded;
    the file the pod gets is then the generated connection file, byte for byte.
    """
    stored = copy.deepcopy(secret)
    stored["data"] = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    return yaml.safe_dump(stored).encode()


def secret_volumes_not_optional(pod: dict[str, Any]) -> None:
    """``optional: false`` on secret volumes: Kubernetes' default, said explicitly, because
    podman 4.3.1 dereferences the unset field (nil pointer panic in VolumeFromSecret)."""
    for volume in pod["spec"]["volumes"]:
        if "secret" in volume:
            volume["secret"].setdefault("optional", False)


def drop_container_ports(pod: dict[str, Any]) -> None:
    """No ``ports`` lists: podman 4.3.1 publishes every containerPort on the *host* (same
    port number), which Kubernetes never does (containerPort is informational; the pod IP
    is reachable on every port). Kept, the kernel would also answer on the host's
    addresses, and a second kernel pod could not start (ports taken)."""
    for container in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
        container.pop("ports", None)


def subpaths_as_host_paths(pod: dict[str, Any], claim_dirs: dict[str, Path]) -> None:
    """Each ``subPath`` mount of a claim becomes a hostPath mount of that sub-folder of the
    claim's podman volume: podman 4.3.1 ignores ``subPath`` (it mounts the volume's root
    at both /tfenv/checkpoints and /tfenv/logs). ``claim_dirs``: claim name -> the
    volume's folder on the host. The sub-folders must exist (:func:`prepare_pod` makes
    them, as the pod's own init container does on Kubernetes)."""
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    for container in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
        for mount in container.get("volumeMounts", []):
            sub = mount.pop("subPath", None)
            if sub is None:
                continue
            claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
            host = claim_dirs[claim] / sub
            name = f"{mount['name']}-{sub}"
            if name not in volumes:
                volumes[name] = {"name": name, "hostPath": {"path": str(host), "type": "Directory"}}
                pod["spec"]["volumes"].append(volumes[name])
            mount["name"] = name


def prepare_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """The generated pod's init containers as a pod of their own, run before the pod.

    Needed only because of :func:`subpaths_as_host_paths`: podman checks hostPaths when
    the pod is played, before any of its containers ran, so the sub-folders that the init
    container makes must exist first. Same image, command, security context and mounts;
    the kernel pod still runs its init container (it does nothing the second time).
    """
    spec = pod["spec"]
    prepared = copy.deepcopy(pod)
    prepared["metadata"]["name"] = f"{OWN_PREFIX}prepare-{uuid.uuid4().hex[:8]}"
    prepared["spec"] = {
        **{k: copy.deepcopy(v) for k, v in spec.items() if k not in ("initContainers",)},
        "containers": copy.deepcopy(spec["initContainers"]),
        "volumes": [v for v in copy.deepcopy(spec["volumes"]) if "persistentVolumeClaim" in v],
    }
    return prepared


# --- playing ---------------------------------------------------------------------------


@dataclass
class PodInfo:
    name: str
    ip: str
    infra_id: str
    #: container name in the pod -> podman's container name
    containers: dict[str, str]

    def container(self, name: str = m.KERNEL_CONTAINER) -> str:
        return self.containers[name]


def _write_yaml(docs: list[dict[str, Any]], directory: Path) -> Path:
    path = directory / f"play-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def pod_ip(pod: str, network: str) -> str:
    """The pod's address on ``network`` (its infra container's, whose netns it shares)."""
    infra = podman("pod", "inspect", "--format", "{{.InfraContainerID}}", pod).stdout.strip()
    info = json.loads(podman("inspect", "--type", "container", infra).stdout)[0]
    networks = info["NetworkSettings"]["Networks"]
    if network not in networks or not networks[network]["IPAddress"]:
        raise PodmanError(f"pod {pod} has no address on {network}: {networks}")
    return str(networks[network]["IPAddress"])


def volume_exists(name: str) -> bool:
    return podman("volume", "exists", name, check=False, timeout=60).returncode == 0


def volume_dir(name: str) -> Path:
    return Path(podman("volume", "inspect", "--format", "{{.Mountpoint}}", name).stdout.strip())


@dataclass
class PodmanSession:
    """Plays pods on one bridge network; :meth:`close` removes everything it created."""

    workdir: Path
    network: str = field(default_factory=lambda: f"{OWN_PREFIX}{uuid.uuid4().hex[:8]}")
    pods: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    network_created: bool = False
    #: pod name -> the YAML file it was played from (what ``kube down`` takes)
    played: dict[str, Path] = field(default_factory=dict)
    #: the process that created the session (a dead one's are swept: sweep_stale)
    pid: int = field(default_factory=os.getpid)

    @property
    def record_path(self) -> Path:
        """This session's record: ``<pid>-<network>.json`` (one per session)."""
        return _RECORDS / f"{self.pid}-{self.network}.json"

    def _record(self) -> None:
        """Write what is (about to be) created to this process's record, so that a run
        killed before its finalizer is cleaned up by the next one (:func:`sweep_stale`)."""
        _RECORDS.mkdir(parents=True, exist_ok=True)
        record = {
            "pods": self.pods,
            "secrets": self.secrets,
            "volumes": self.volumes,
            "network": self.network,
            "network_created": self.network_created,
        }
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(self.record_path)

    def create_network(self) -> None:
        self.network_created = True
        self._record()
        podman("network", "create", self.network)

    def kube_play(self, docs: list[dict[str, Any]]) -> list[str]:
        """``podman kube play --network`` of ``docs``; returns the pod names played."""
        names = [d["metadata"]["name"] for d in docs if d["kind"] == "Pod"]
        self.pods += names
        self.volumes += [
            d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"
        ]
        path = _write_yaml(docs, self.workdir)
        self.played.update(dict.fromkeys(names, path))
        self._record()
        podman("kube", "play", "--network", self.network, str(path))
        return names

    def kube_down(self, pod: str) -> None:
        """``podman kube down`` of the YAML ``pod`` was played from: the pod and its
        containers go (podman 4.3.1 takes down only pods); claims, secrets and the
        secret's volume stay until :meth:`close`."""
        podman("kube", "down", str(self.played[pod]))
        assert podman("pod", "exists", pod, check=False).returncode == 1

    def wait_exited(self, pod: str, timeout: float = 120) -> dict[str, int]:
        """Wait until every container but the infra one exited: name -> exit code."""
        deadline = time.monotonic() + timeout
        while True:
            info = json.loads(podman("pod", "inspect", pod).stdout)
            states = {
                c["Name"]: c["State"]
                for c in info["Containers"]
                if c["Id"] != info["InfraContainerID"]
            }
            if all(s in ("exited", "stopped") for s in states.values()):
                codes = {}
                for name in states:
                    out = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout
                    codes[name] = int(out.strip())
                return codes
            if time.monotonic() > deadline:
                raise PodmanError(f"pod {pod} still running after {timeout} s: {states}")
            time.sleep(0.2)

    def play_kernel(self, objects: m.KernelObjects) -> PodInfo:
        """Play one kernel's generated objects (adapted for podman 4.3.1, see above)."""
        docs = drop_network_policy(objects)
        secret, pvc, pod = docs
        claim = pvc["metadata"]["name"]
        # The product creates the claim only when it is missing (KernelObjects); podman
        # refuses a PVC whose volume exists ("volume already exists").
        if not volume_exists(claim):
            self.volumes.append(claim)
            prepare = prepare_pod(pod)
            self.kube_play([pvc, prepare])
            codes = self.wait_exited(prepare["metadata"]["name"])
            self.kube_down(prepare["metadata"]["name"])
            if any(codes.values()):
                raise PodmanError(f"preparing claim {claim} failed: {codes}")
        name = secret["metadata"]["name"]
        self.secrets.append(name)
        self._record()
        podman("secret", "create", name, "-", stdin=secret_for_podman(secret))
        secret_volumes_not_optional(pod)
        drop_container_ports(pod)
        subpaths_as_host_paths(pod, {claim: volume_dir(claim)})
        # podman makes a named volume of the secret's name for the files (kept after
        # the pod): cleaned up with the rest.
        self.volumes.append(name)
        (pod_name,) = self.kube_play([pod])
        info = json.loads(podman("pod", "inspect", pod_name).stdout)
        containers = {}
        for c in info["Containers"]:
            if c["Id"] == info["InfraContainerID"]:
                continue
            containers[c["Name"].removeprefix(f"{pod_name}-")] = c["Name"]
        return PodInfo(
            name=pod_name,
            ip=pod_ip(pod_name, self.network),
            infra_id=info["InfraContainerID"],
            containers=containers,
        )

    def close(self) -> list[str]:
        """Remove everything; returns what could not be removed (empty: all gone)."""
        problems: list[str] = []
        for pod in reversed(self.pods):
            if podman("pod", "exists", pod, check=False).returncode == 0:
                rm = podman("pod", "rm", "--force", "--time", "2", pod, check=False)
                if rm.returncode != 0:
                    problems.append(f"pod {pod}: {rm.stderr.strip()}")
        for secret in self.secrets:
            if podman("secret", "inspect", secret, check=False).returncode == 0:
                rm = podman("secret", "rm", secret, check=False)
                if rm.returncode != 0:
                    problems.append(f"secret {secret}: {rm.stderr.strip()}")
        for volume in dict.fromkeys(self.volumes):
            if volume_exists(volume):
                rm = podman("volume", "rm", "--force", volume, check=False)
                if rm.returncode != 0:
                    problems.append(f"volume {volume}: {rm.stderr.strip()}")
        if (
            self.network_created
            and podman("network", "exists", self.network, check=False).returncode == 0
        ):
            rm = podman("network", "rm", "--force", self.network, check=False)
            if rm.returncode != 0:
                problems.append(f"network {self.network}: {rm.stderr.strip()}")
        if not problems:
            self.record_path.unlink(missing_ok=True)
        return problems


_RECORDS = _CONF_DIR / "sessions"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[str]:
    """Remove what sessions of dead processes (killed before their finalizer) left; returns
    what was swept. Only names those sessions recorded are touched."""
    swept: list[str] = []
    for path in sorted(_RECORDS.glob("*.json")) if _RECORDS.is_dir() else []:
        try:
            pid = int(path.stem.split("-", 1)[0])
            record = json.loads(path.read_text())
            network = str(record["network"])
        except (ValueError, OSError, KeyError):
            continue
        if pid == os.getpid() or _alive(pid):
            continue
        stale = PodmanSession(
            workdir=_RECORDS,
            network=network,
            pods=list(record.get("pods", [])),
            secrets=list(record.get("secrets", [])),
            volumes=list(record.get("volumes", [])),
            network_created=bool(record.get("network_created")),
            pid=pid,
        )
        stale.close()  # removes the record when everything went
        swept.append(f"{path.name}: {record}")
    return swept


@contextlib.contextmanager
def podman_session(workdir: Path) -> Iterator[PodmanSession]:
    sweep_stale()
    session = PodmanSession(workdir=workdir)
    try:
        session.create_network()
        yield session
    finally:
        problems = session.close()
        if problems:
            raise PodmanError("tier 2 left podman objects behind: " + "; ".join(problems))
