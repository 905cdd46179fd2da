"""A scripted Kubernetes API server for the backend's tests (tier 3, "scripted API").

It is NOT Kubernetes. It serves, on loopback, the handful of REST paths the broker's
Kubernetes backend uses (pods, pods/log, secrets, persistentvolumeclaims, events,
networkpolicies), in the API's own JSON, to the real ``kubernetes`` Python client:

- it authenticates (a bearer token) and validates every object it is given strictly
  against the official schema (kubernetes-validate), answering 422 as the API would;
- it enforces the restricted Pod Security Standard on pods (our own checker) as a
  namespace labelled ``enforce=restricted`` would (403, the API's wording);
- an immutable Secret refuses changes of its data; deleting a pod deletes what it owns
  (the garbage collector's job);
- what happens to a pod after it is created is the *kubelet's* part, a script: each
  test says what the node does (schedule it or not, pull slowly, fail the pull, OOM-kill
  it), or uses :class:`DockerKubelet`, which runs the pod's kernel container for real
  from its image (as the pod's uid, on its own loopback address 127.B.C.D standing in
  for the pod IP, with the Secret's file mounted read-only and the claim a folder).

Tests that use it say so ("scripted API") in their docstrings.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import functools
import ipaddress
import itertools
import json
import os
import random
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import kubernetes_validate
from tornado import httpserver, ioloop, netutil, web

from jupyter_tfenv.backends.kubernetes import manifests as m
from jupyter_tfenv.backends.kubernetes.pss import check_pod

TOKEN = "scripted-api-token"
VERSION = "1.33"

KINDS = {
    "pods": ("v1", "Pod"),
    "secrets": ("v1", "Secret"),
    "persistentvolumeclaims": ("v1", "PersistentVolumeClaim"),
    "events": ("v1", "Event"),
    "networkpolicies": ("networking.k8s.io/v1", "NetworkPolicy"),
}


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class Kubelet:
    """What the node does with a pod. The default does nothing: the pod stays Pending."""

    def created(self, api: ScriptedAPI, pod: dict[str, Any]) -> None:
        """Called (on the server's thread) right after a pod was stored."""

    def deleted(self, api: ScriptedAPI, pod: dict[str, Any]) -> None:
        """Called when a pod is deleted."""

    def log(self, api: ScriptedAPI, pod: dict[str, Any]) -> str:
        return ""


class RunningKubelet(Kubelet):
    """A node that really runs each pod (``_run``, in a thread of its own); a failure
    there is the pod's: Failed, with a Warning event that says why."""

    WHO = "kubelet"

    def created(self, api: ScriptedAPI, pod: dict[str, Any]) -> None:
        threading.Thread(target=self._run_or_fail, args=(api, pod), daemon=True).start()

    def _run(self, api: ScriptedAPI, pod: dict[str, Any]) -> None:
        raise NotImplementedError

    @staticmethod
    def report_running(api: ScriptedAPI, pod: dict[str, Any], ip: str, node: str) -> None:
        """The pod runs on ``node`` with IP ``ip``: its status and events in the API."""
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        image = next(
            c["image"] for c in pod["spec"]["containers"] if c["name"] == m.KERNEL_CONTAINER
        )
        status = {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            **scheduled(),
            **container({"running": {"startedAt": now_iso()}}, image, True),
        }
        events = [
            ("Scheduled", f"Successfully assigned {ns}/{name} to {node}", "Normal"),
            ("Started", "Started container kernel", "Normal"),
        ]
        api.call_soon(lambda: api.update_pod(ns, name, status, events))

    @staticmethod
    def report_exit(api: ScriptedAPI, ns: str, name: str, code: int) -> None:
        """The kernel container exited with ``code``: the pod ended."""
        state = {"terminated": {"exitCode": code, "reason": "Error" if code else "Completed"}}
        status = {"phase": "Succeeded" if code == 0 else "Failed", **container(state)}
        api.call_soon(lambda: api.update_pod(ns, name, status, []))

    def _run_or_fail(self, api: ScriptedAPI, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            self._run(api, pod)
        except Exception as err:  # reported as the pod's state
            why = f"{self.WHO}: {err}"
            api.call_soon(
                lambda: api.update_pod(
                    meta["namespace"],
                    meta["name"],
                    {"phase": "Failed", "message": why},
                    [("Failed", why, "Warning")],
                )
            )


class ScriptedKubelet(Kubelet):
    """Plays ``steps`` on each new pod: (seconds after creation, status, events) each,
    ``status`` merged into the pod's status, events (reason, message, type) recorded."""

    def __init__(
        self, steps: list[tuple[float, dict[str, Any], list[tuple[str, str, str]]]], logs: str = ""
    ) -> None:
        self.steps = steps
        self.logs = logs

    def created(self, api: ScriptedAPI, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        ns = pod["metadata"]["namespace"]
        for delay, status, events in self.steps:
            api.later(delay, functools.partial(api.update_pod, ns, name, status, events))

    def log(self, api: ScriptedAPI, pod: dict[str, Any]) -> str:
        return self.logs


def scheduled(node: str = "node-1") -> dict[str, Any]:
    return {"conditions": [{"type": "PodScheduled", "status": "True"}], "hostIP": "10.0.0.1"}


def container(state: dict[str, Any], image: str = "", ready: bool = False) -> dict[str, Any]:
    return {
        "containerStatuses": [
            {
                "name": m.KERNEL_CONTAINER,
                "image": image,
                "imageID": "",
                "ready": ready,
                "restartCount": 0,
                "state": state,
            }
        ]
    }


class DockerKubelet(RunningKubelet):
    """Runs each pod's kernel container for real, as a Docker container of the pod's image
    (see the module docstring), with the pod's command, uid/gid, variables, no
    capabilities, no new privileges, and its volumes: the Secret's file written read-only
    into a folder mounted read-only at /tfenv/connection, the claim a folder per claim name
    (the init container's subfolders made as the pod's uid) mounted at its subPaths.

    The stand-ins, each the least a pod needs off a cluster: the pod IP is a loopback
    address of its own, 127.B.C.D (the container shares the host's network namespace, so
    the kernel's address, 0.0.0.0 in the Secret's connection file and in its --ip
    argument, becomes 127.B.C.D in both: nothing listens beyond loopback, and two pods
    never share a port).
    """

    LABEL = "org.jupyter.tfenv.test"
    #: Pod IPs: 127.B.C.D from a random B per process, so that two test runs on one
    #: machine never hand out the same address (the kernels' ports are fixed).
    _base = random.randint(1, 250)
    _ips = itertools.count(2)

    def __init__(self, root: Path, docker_client: Any) -> None:
        self.root = root
        self.docker = docker_client
        self.containers: dict[str, Any] = {}
        self.ip_of: dict[str, str] = {}
        #: This node's own label value: stop() removes its containers, never another
        #: test run's (two runs on one machine share the engine).
        self.node_id = f"k8s-kubelet-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def claim_dir(self, claim: str) -> Path:
        return self.root / "claims" / claim

    def _run(self, api: ScriptedAPI, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        ns, name = meta["namespace"], meta["name"]
        sec = spec.get("securityContext") or {}
        uid, gid = int(sec["runAsUser"]), int(sec.get("runAsGroup", sec["runAsUser"]))
        n = next(self._ips)
        ip = f"127.{self._base}.{n // 250}.{n % 250 + 2}"
        self.ip_of[name] = ip
        poddir = self.root / "pods" / f"{name}-{meta['uid'][:8]}"
        poddir.mkdir(parents=True)
        sources: dict[str, str] = {}
        for vol in spec.get("volumes") or []:
            if "secret" in vol:
                secret = api.get("secrets", ns, vol["secret"]["secretName"])
                if secret is None:
                    raise RuntimeError(f"secret {vol['secret']['secretName']} not found")
                folder = poddir / vol["name"]
                folder.mkdir()
                for fname, data in (secret.get("data") or {}).items():
                    f = folder / fname
                    raw = base64.b64decode(data)
                    if fname == m.CONNECTION_FILE:  # the kernel binds what the file says
                        raw = json.dumps({**json.loads(raw), "ip": ip}).encode()
                    f.write_bytes(raw)
                    os.chown(f, 0, gid)
                    f.chmod(0o440)
                os.chown(folder, 0, gid)
                folder.chmod(0o550)
                sources[vol["name"]] = str(folder)
            elif "persistentVolumeClaim" in vol:
                claim = vol["persistentVolumeClaim"]["claimName"]
                if api.get("persistentvolumeclaims", ns, claim) is None:
                    raise RuntimeError(f"persistentvolumeclaim {claim} not found")
                folder = self.claim_dir(claim)
                folder.mkdir(parents=True, exist_ok=True)
                # The init container's job, on the checkpoint claim only (the user's home
                # claim, issue 22, is the server's: its folders are the test's).
                if vol["name"] != "home":
                    for sub in (m.CHECKPOINT_SUBPATH, m.LOG_SUBPATH):
                        (folder / sub).mkdir(exist_ok=True)
                        os.chown(folder / sub, uid, gid)
                sources[vol["name"]] = str(folder)
            else:  # emptyDir
                folder = poddir / vol["name"]
                folder.mkdir()
                os.chown(folder, uid, gid)
                sources[vol["name"]] = str(folder)
        kernel = next(c for c in spec["containers"] if c["name"] == m.KERNEL_CONTAINER)
        binds = []
        for mount in kernel.get("volumeMounts") or []:
            source = os.path.join(sources[mount["name"]], mount.get("subPath", ""))
            mode = "ro" if mount.get("readOnly") else "rw"
            binds.append(f"{source.rstrip('/')}:{mount['mountPath']}:{mode}")
        # A kernel's --ip= and a TensorBoard's --host= (all the pod's addresses) alike.
        cmd = [
            f"--ip={ip}"
            if a.startswith("--ip=")
            else f"--host={ip}"
            if a == "--host=0.0.0.0"
            else a
            for a in kernel["command"]
        ]
        env = {e["name"]: e.get("value", "") for e in kernel.get("env") or []}
        box = self.docker.containers.run(
            kernel["image"],
            cmd,
            detach=True,
            name=f"tfenv-test-pod-{name[-40:]}-{meta['uid'][:8]}",
            labels={self.LABEL: self.node_id},
            network_mode="host",
            user=f"{uid}:{gid}",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            environment=env,
            volumes=binds,
            working_dir=kernel.get("workingDir") or "/tmp",
        )
        self.containers[name] = box
        self.report_running(api, pod, ip, "node-1")
        threading.Thread(target=self._reap, args=(api, ns, name, box), daemon=True).start()

    def _reap(self, api: ScriptedAPI, ns: str, name: str, box: Any) -> None:
        try:
            code = int(box.wait().get("StatusCode", 1))
        except Exception:
            return
        if self.containers.get(name) is box:
            self.report_exit(api, ns, name, code)

    def deleted(self, api: ScriptedAPI, pod: dict[str, Any]) -> None:
        box = self.containers.pop(pod["metadata"]["name"], None)
        if box is not None:
            box.remove(force=True)

    def log(self, api: ScriptedAPI, pod: dict[str, Any]) -> str:
        box = self.containers.get(pod["metadata"]["name"])
        return box.logs().decode("utf-8", "replace") if box is not None else ""

    def stop(self) -> None:
        mine = {"label": f"{self.LABEL}={self.node_id}"}
        for box in self.docker.containers.list(all=True, filters=mine):
            box.remove(force=True)
        self.containers.clear()


class ScriptedAPI:
    """The server: ``start()`` it, point a client at ``url`` with ``TOKEN``, ``stop()``."""

    def __init__(self, namespace: str = "tfenv-kernels", *, restricted: bool = True) -> None:
        self.namespace = namespace
        self.restricted = restricted
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.kubelet: Kubelet = Kubelet()
        #: (method, path) of every request, in order.
        self.requests: list[tuple[str, str]] = []
        #: Called with each pod before it is stored: return a Status dict to refuse it.
        self.admission: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None
        #: The cluster's nodes (``GET /api/v1/nodes``); None: listing them is forbidden,
        #: as for the broker's namespaced Role (RBAC's 403).
        self.nodes: list[dict[str, Any]] | None = None
        #: The resource metrics API (metrics.k8s.io, metrics-server): PodMetrics by
        #: (namespace, pod); None: the cluster does not serve it (the API server's 404).
        self.pod_metrics: dict[tuple[str, str], dict[str, Any]] | None = None
        #: Answer RBAC's 403 to metrics reads (a Role without get on pods.metrics.k8s.io).
        self.metrics_forbidden = False
        self.loop: ioloop.IOLoop | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        self._rv = itertools.count(1)
        self.lock = threading.RLock()

    # -- objects ------------------------------------------------------------------------

    def get(self, plural: str, ns: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            obj = self.objects.get((plural, ns, name))
            return copy.deepcopy(obj) if obj is not None else None

    def all(self, plural: str) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(o) for (p, _, _), o in self.objects.items() if p == plural]

    def store(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        meta["resourceVersion"] = str(next(self._rv))
        with self.lock:
            self.objects[(plural, meta["namespace"], meta["name"])] = obj
        return obj

    def event(self, ns: str, pod: str, reason: str, message: str, kind: str = "Normal") -> None:
        name = f"{pod}.{uuid.uuid4().hex[:12]}"
        t = now_iso()
        self.store(
            "events",
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": ns, "creationTimestamp": t},
                "involvedObject": {"kind": "Pod", "name": pod, "namespace": ns},
                "reason": reason,
                "message": message,
                "type": kind,
                "count": 1,
                "firstTimestamp": t,
                "lastTimestamp": t,
            },
        )

    def update_pod(
        self, ns: str, name: str, status: dict[str, Any], events: list[tuple[str, str, str]]
    ) -> None:
        with self.lock:
            pod = self.objects.get(("pods", ns, name))
            if pod is None:
                return
            pod["status"] = {**pod.get("status", {}), **copy.deepcopy(status)}
            pod["metadata"]["resourceVersion"] = str(next(self._rv))
        for reason, message, kind in events:
            self.event(ns, name, reason, message, kind)

    # -- the server's thread ------------------------------------------------------------

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        assert self.loop is not None
        self.loop.call_later(delay, fn)

    def call_soon(self, fn: Callable[[], None]) -> None:
        assert self.loop is not None
        self.loop.add_callback(fn)

    def start(self) -> None:
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(asyncio.new_event_loop())
            self.loop = ioloop.IOLoop.current()
            app = web.Application(
                [
                    (r"/api/v1/nodes", NodeListHandler, {"api": self}),
                    (
                        r"/apis/metrics.k8s.io/v1beta1/namespaces/([^/]+)/pods/([^/]+)",
                        PodMetricsHandler,
                        {"api": self},
                    ),
                    (r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/log", LogHandler, {"api": self}),
                    (r"/api/v1/namespaces/([^/]+)/([a-z]+)", CollectionHandler, {"api": self}),
                    (r"/api/v1/namespaces/([^/]+)/([a-z]+)/([^/]+)", ObjectHandler, {"api": self}),
                    (
                        r"/apis/networking.k8s.io/v1/namespaces/([^/]+)/([a-z]+)",
                        CollectionHandler,
                        {"api": self},
                    ),
                    (
                        r"/apis/networking.k8s.io/v1/namespaces/([^/]+)/([a-z]+)/([^/]+)",
                        ObjectHandler,
                        {"api": self},
                    ),
                ]
            )
            sockets = netutil.bind_sockets(0, "127.0.0.1")
            server = httpserver.HTTPServer(app)
            server.add_sockets(sockets)
            self.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
            ready.set()
            self.loop.start()
            server.stop()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        ready.wait(10)

    def stop(self) -> None:
        if self.loop is not None:
            self.loop.add_callback(self.loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        if isinstance(self.kubelet, DockerKubelet):
            self.kubelet.stop()

    def api_client(self) -> Any:
        from kubernetes import client

        conf = client.Configuration()
        conf.host = self.url
        conf.api_key = {"authorization": TOKEN}
        conf.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(conf)

    def kubeconfig(self, folder: Path) -> Path:
        """A kubeconfig file for this server (for code that loads one)."""
        path = folder / "kubeconfig"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "scripted", "cluster": {"server": self.url}}],
                    "users": [{"name": "broker", "user": {"token": TOKEN}}],
                    "contexts": [
                        {
                            "name": "scripted",
                            "context": {
                                "cluster": "scripted",
                                "user": "broker",
                                "namespace": self.namespace,
                            },
                        }
                    ],
                    "current-context": "scripted",
                }
            )
        )
        return path


class _Base(web.RequestHandler):
    api: ScriptedAPI

    def initialize(self, api: ScriptedAPI) -> None:
        self.api = api

    def check_xsrf_cookie(self) -> None:
        return

    def prepare(self) -> None:
        self.api.requests.append((self.request.method or "", self.request.uri or ""))
        if self.request.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.fail(401, "Unauthorized", "Unauthorized")

    def fail(self, code: int, reason: str, message: str) -> None:
        self.set_status(code)
        self.finish(status_body(code, reason, message))
        raise web.Finish()

    def answer(self, obj: Any, code: int = 200) -> None:
        self.set_status(code)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(obj))

    def body(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.request.body or b"{}"))
        except ValueError:
            self.fail(400, "BadRequest", "the body is not JSON")
            raise

    def kind_of(self, plural: str) -> tuple[str, str]:
        if plural not in KINDS:
            self.fail(
                404, "NotFound", f"the server could not find the requested resource ({plural})"
            )
        return KINDS[plural]


class CollectionHandler(_Base):
    def get(self, ns: str, plural: str) -> None:
        api_version, kind = self.kind_of(plural)
        labels = self.get_query_argument("labelSelector", "")
        fields = self.get_query_argument("fieldSelector", "")
        want = dict(p.split("=", 1) for p in labels.split(",") if p)
        field_want = dict(p.split("=", 1) for p in fields.split(",") if p)
        items = []
        for obj in self.api.all(plural):
            if obj["metadata"]["namespace"] != ns:
                continue
            got = obj["metadata"].get("labels") or {}
            if any(got.get(k) != v for k, v in want.items()):
                continue
            involved = obj.get("involvedObject", {}).get("name")
            wanted = field_want.get("involvedObject.name")
            if wanted is not None and involved != wanted:
                continue
            items.append(obj)
        self.answer(
            {"apiVersion": api_version, "kind": f"{kind}List", "metadata": {}, "items": items}
        )

    def post(self, ns: str, plural: str) -> None:
        _, kind = self.kind_of(plural)
        obj = self.body()
        if obj.get("kind") != kind:
            self.fail(400, "BadRequest", f"the body is a {obj.get('kind')}, not a {kind}")
        try:
            kubernetes_validate.validate(obj, VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            self.fail(
                422,
                "Invalid",
                f'{kind} "{obj.get("metadata", {}).get("name")}" is invalid: {err.message}',
            )
        meta = obj["metadata"]
        if meta.get("namespace", ns) != ns:
            self.fail(400, "BadRequest", "the namespace of the provided object does not match")
        meta["namespace"] = ns
        if self.api.get(plural, ns, meta["name"]) is not None:
            self.fail(409, "AlreadyExists", f'{plural} "{meta["name"]}" already exists')
        if plural == "pods":
            if self.api.restricted:
                violations = check_pod(obj)
                if violations:
                    self.fail(
                        403,
                        "Forbidden",
                        f'pods "{meta["name"]}" is forbidden: violates PodSecurity '
                        f'"restricted:latest": {"; ".join(str(v) for v in violations)}',
                    )
            if self.api.admission is not None:
                refusal = self.api.admission(obj)
                if refusal is not None:
                    self.set_status(refusal["code"])
                    self.finish(refusal)
                    return
            obj["status"] = {"phase": "Pending", "qosClass": "Guaranteed"}
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_iso()
        self.api.store(plural, obj)
        if plural == "pods":
            self.api.kubelet.created(self.api, copy.deepcopy(obj))
        self.answer(obj, 201)


class ObjectHandler(_Base):
    def _obj(self, ns: str, plural: str, name: str) -> dict[str, Any]:
        self.kind_of(plural)
        obj = self.api.get(plural, ns, name)
        if obj is None:
            self.fail(404, "NotFound", f'{plural} "{name}" not found')
        assert obj is not None
        return obj

    def get(self, ns: str, plural: str, name: str) -> None:
        self.answer(self._obj(ns, plural, name))

    def patch(self, ns: str, plural: str, name: str) -> None:
        obj = self._obj(ns, plural, name)
        patch = self.body()
        if (
            plural == "secrets"
            and obj.get("immutable")
            and ("data" in patch or "stringData" in patch)
        ):
            self.fail(
                422,
                "Invalid",
                f'Secret "{name}" is invalid: data: Forbidden: field is immutable when '
                "`immutable` is set",
            )
        meta_patch = patch.get("metadata") or {}
        for key, value in meta_patch.items():
            if key in ("annotations", "labels") and isinstance(value, dict):
                # Merged, as a merge patch does: null removes a key.
                merged = {**(obj["metadata"].get(key) or {}), **value}
                obj["metadata"][key] = {k: v for k, v in merged.items() if v is not None}
            else:
                obj["metadata"][key] = value  # lists (ownerReferences) are replaced
        self.api.store(plural, obj)
        self.answer(obj)

    def delete(self, ns: str, plural: str, name: str) -> None:
        obj = self._obj(ns, plural, name)
        with self.api.lock:
            self.api.objects.pop((plural, ns, name), None)
            if plural == "pods":  # the garbage collector: what the pod owned goes too
                for key, other in list(self.api.objects.items()):
                    refs = other["metadata"].get("ownerReferences") or []
                    if any(r.get("uid") == obj["metadata"]["uid"] for r in refs):
                        self.api.objects.pop(key, None)
        if plural == "pods":
            self.api.kubelet.deleted(self.api, obj)
        self.answer({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}})


class NodeListHandler(_Base):
    def get(self) -> None:
        nodes = self.api.nodes
        if nodes is None:
            self.fail(
                403,
                "Forbidden",
                'nodes is forbidden: User "system:serviceaccount:tfenv-kernels:tfenv-broker" '
                'cannot list resource "nodes" in API group "" at the cluster scope',
            )
            return
        self.answer(
            {
                "kind": "NodeList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": "1"},
                "items": copy.deepcopy(nodes),
            }
        )


class PodMetricsHandler(_Base):
    """``GET /apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/{name}``, answered as the
    API server (group not served: 404 with an empty details) or metrics-server (no reading
    of that pod: 404 naming the group) does."""

    def get(self, ns: str, name: str) -> None:
        if self.api.metrics_forbidden:
            self.fail(
                403,
                "Forbidden",
                f'pods.metrics.k8s.io "{name}" is forbidden: User '
                '"system:serviceaccount:jhub:tfenv-broker" cannot get resource "pods" in API '
                f'group "metrics.k8s.io" in the namespace "{ns}"',
            )
        served = self.api.pod_metrics
        if served is None:
            self.fail(404, "NotFound", "the server could not find the requested resource")
        assert served is not None
        with self.api.lock:
            found = copy.deepcopy(served.get((ns, name)))
        if found is None:
            self.set_status(404)
            self.finish(
                {
                    **status_body(404, "NotFound", f'pods.metrics.k8s.io "{ns}/{name}" not found'),
                    "details": {"name": f"{ns}/{name}", "group": "metrics.k8s.io", "kind": "pods"},
                }
            )
            return
        self.answer(found)


class LogHandler(_Base):
    def get(self, ns: str, name: str) -> None:
        pod = self.api.get("pods", ns, name)
        if pod is None:
            self.fail(404, "NotFound", f'pods "{name}" not found')
        assert pod is not None
        text = self.api.kubelet.log(self.api, pod)
        tail = self.get_query_argument("tailLines", "")
        if tail.isdigit():
            text = "".join(text.splitlines(keepends=True)[-int(tail) :])
        self.set_header("Content-Type", "text/plain")
        self.finish(text)


def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels, matchExpressions In/NotIn/Exists) selects."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def egress_allowed(
    policies: list[dict[str, Any]],
    pod: dict[str, Any],
    *,
    port: int,
    protocol: str = "TCP",
    ip: str | None = None,
    namespace: str | None = None,
    namespace_labels: dict[str, str] | None = None,
    pod_labels: dict[str, str] | None = None,
) -> bool:
    """Whether NetworkPolicy semantics let ``pod`` open a connection to a destination: an
    address (``ip``), or a pod (``pod_labels``) in ``namespace`` (``namespace_labels``).

    What a CNI that enforces policies decides (networking.k8s.io/v1): the policies of the
    pod's namespace that select it and list Egress; none: everything is allowed; else a
    connection is allowed when some rule's ports and some peer of its ``to`` match.
    ``ipBlock`` peers match addresses (``except`` carved out), selector peers match pods.
    This is the test's CNI: the scripted API stores policies but nothing enforces them.
    """
    meta = pod["metadata"]
    mine = [
        p
        for p in policies
        if p["metadata"]["namespace"] == meta["namespace"]
        and _selects(p["spec"].get("podSelector"), meta.get("labels") or {})
        and "Egress" in (p["spec"].get("policyTypes") or [])
    ]
    if not mine:
        return True
    ns_labels = dict(namespace_labels or {})
    if namespace is not None:
        ns_labels.setdefault("kubernetes.io/metadata.name", namespace)

    def port_matches(rule: dict[str, Any]) -> bool:
        ports = rule.get("ports")
        if not ports:
            return True
        for p in ports:
            if p.get("protocol", "TCP") != protocol:
                continue
            if "port" not in p:
                return True
            first = int(p["port"])
            last = int(p.get("endPort", first))
            if first <= port <= last:
                return True
        return False

    def peer_matches(peer: dict[str, Any]) -> bool:
        if "ipBlock" in peer:
            if ip is None:
                return False
            addr = ipaddress.ip_address(ip)
            block = peer["ipBlock"]
            net = ipaddress.ip_network(block["cidr"])
            if addr.version != net.version or addr not in net:
                return False
            return not any(
                addr in ipaddress.ip_network(x)
                for x in block.get("except") or []
                if ipaddress.ip_network(x).version == addr.version
            )
        if pod_labels is None:
            return False
        if "namespaceSelector" in peer:
            if not _selects(peer["namespaceSelector"], ns_labels):
                return False
        elif namespace != meta["namespace"]:
            return False
        return _selects(peer.get("podSelector"), pod_labels)

    for policy in mine:
        for rule in policy["spec"].get("egress") or []:
            if port_matches(rule) and (
                not rule.get("to") or any(peer_matches(p) for p in rule["to"])
            ):
                return True
    return False


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "it") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def make_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="tfenv-k8s-"))
    root.chmod(0o755)
    return root


def remove_root(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
