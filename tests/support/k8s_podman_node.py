"""A node for the scripted API (tests/support/k8s_api.py) that runs each pod as a real podman pod.

:class:`PodmanKubelet` joins tier 3 (the scripted API, which the broker's real
``kubernetes`` client talks to) and tier 2 (tests/support/podman.py, a generated pod played by
``podman kube play`` on a bridge network): when the broker creates a kernel pod, the node
plays it with the tier-2 harness, from the objects the API stored (the pod, the Secret
its volume names, the claim its volume names), adapted for podman 4.3.1 by the harness's
own functions (:meth:`tests.support.podman.PodmanSession.play_kernel`). The pod's status in the
API then says Running, with the podman pod's real IP as ``podIP``; the kernel container's
exit is reported as terminated with its exit code; a failure to play is the pod's
Failed status with a Warning event (as :class:`tests.support.k8s_api.DockerKubelet` does).
Deleting the pod in the API takes the podman pod down; :meth:`PodmanKubelet.stop`
removes everything the node created (pods, secrets, volumes, the network).
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any

from jupyter_tfenv.backends.kubernetes import manifests as m
from tests.support import podman as pm
from tests.support.k8s_api import RunningKubelet, ScriptedAPI

#: What of a stored object's metadata goes to podman (not the API's uid, version, owners).
_META_KEPT = ("name", "namespace", "labels", "annotations")


def as_submitted(obj: dict[str, Any]) -> dict[str, Any]:
    """A stored object as it was generated: no status, no fields the API server added."""
    clean = {k: copy.deepcopy(v) for k, v in obj.items() if k not in ("status", "metadata")}
    clean["metadata"] = {k: copy.deepcopy(v) for k, v in obj["metadata"].items() if k in _META_KEPT}
    return clean


class PodmanKubelet(RunningKubelet):
    """Plays each created pod under podman (see the module docstring), in a worker thread.

    ``pods``: pod name -> the played pod (:class:`tests.support.podman.PodInfo`), while it exists.
    """

    WHO = "kubelet (podman)"

    def __init__(self, workdir: Path) -> None:
        pm.sweep_stale()
        self.session = pm.PodmanSession(workdir=workdir)
        self.session.create_network()
        self.pods: dict[str, pm.PodInfo] = {}
        #: uids of the pods deleted in the API (a restart makes a new pod of the same name)
        self._gone: set[str] = set()
        #: the harness's session is not thread-safe: one podman operation at a time
        self._lock = threading.Lock()

    @property
    def network(self) -> str:
        return self.session.network

    def _objects(self, api: ScriptedAPI, pod: dict[str, Any]) -> m.KernelObjects:
        ns = pod["metadata"]["namespace"]
        secret = claim = None
        for volume in pod["spec"].get("volumes") or []:
            if "secret" in volume:
                name = volume["secret"]["secretName"]
                secret = api.get("secrets", ns, name)
                if secret is None:
                    raise RuntimeError(f"secret {name} not found")
            elif "persistentVolumeClaim" in volume:
                name = volume["persistentVolumeClaim"]["claimName"]
                claim = api.get("persistentvolumeclaims", ns, name)
                if claim is None:
                    raise RuntimeError(f"persistentvolumeclaim {name} not found")
        if secret is None or claim is None:
            raise RuntimeError("the pod has no Secret volume or no claim: not a kernel pod")
        policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {}}
        return m.KernelObjects(
            secret=as_submitted(secret),
            pvc=as_submitted(claim),
            pod=as_submitted(pod),
            network_policy=policy,  # dropped by the harness (nothing would enforce it)
        )

    def _run(self, api: ScriptedAPI, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        ns, name = meta["namespace"], meta["name"]
        objects = self._objects(api, pod)
        with self._lock:
            if meta["uid"] in self._gone:  # deleted before it could be played
                return
            info = self.session.play_kernel(objects)
            self.pods[name] = info
        self.report_running(api, pod, info.ip, "podman")
        threading.Thread(
            target=self._reap, args=(api, ns, name, meta["uid"], info), daemon=True
        ).start()

    def _reap(self, api: ScriptedAPI, ns: str, name: str, uid: str, info: pm.PodInfo) -> None:
        """Wait for the kernel container's exit; report it unless the pod was deleted."""
        try:
            result = pm.podman("wait", info.container(), check=False, timeout=24 * 3600)
            code = int(result.stdout.strip().splitlines()[-1])
        except Exception:
            return
        if self.pods.get(name) is info and uid not in self._gone:
            self.report_exit(api, ns, name, code)

    def deleted(self, api: ScriptedAPI, pod: dict[str, Any]) -> None:
        """``podman kube down`` of the pod, then its secret (the API's went with the pod)."""
        name = pod["metadata"]["name"]
        self._gone.add(pod["metadata"]["uid"])
        with self._lock:
            info = self.pods.pop(name, None)
            if info is None:
                return
            self.session.kube_down(info.name)
            for volume in pod["spec"].get("volumes") or []:
                if "secret" in volume:
                    secret = volume["secret"]["secretName"]
                    pm.podman("secret", "rm", secret, check=False)
                    pm.podman("volume", "rm", "--force", secret, check=False)

    def log(self, api: ScriptedAPI, pod: dict[str, Any]) -> str:
        info = self.pods.get(pod["metadata"]["name"])
        if info is None:
            return ""
        result = pm.podman("logs", info.container(), check=False, timeout=60)
        return result.stdout + result.stderr

    def stop(self) -> list[str]:
        """Remove everything the node created; returns what could not be removed."""
        with self._lock:
            self.pods.clear()
            return self.session.close()
