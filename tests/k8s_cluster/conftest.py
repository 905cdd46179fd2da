"""Fixtures of the real-cluster suite (settings: test_cluster.py's docstring).

- ``api_client`` (session): the ``kubernetes`` client from ``$KUBECONFIG``
  (:func:`load_api_client`); every test is skipped, with the reason, when the kubeconfig
  cannot be loaded or the API server does not answer ``GET /version`` within seconds.
- ``namespace`` (session): the kernels' namespace; a missing one fails every test with
  the command that makes it.
- ``user`` (per test): a throwaway hub user name ``tfenv-cluster-test-<random>``; the
  checkpoint claims made for it are deleted after the test.
- ``kernels`` (per test): starts kernel pods through :class:`KubernetesAPI`, reaches
  their kernels (pod IP or ``kubectl port-forward``) and, after the test, removes every
  pod, Secret and NetworkPolicy the test made and stops its port-forwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from jupyter_client import AsyncKernelClient
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from jupyter_tfenv.backends.kubernetes import manifests as m
from jupyter_tfenv.backends.kubernetes.api import KubernetesAPI, StartedPod, load_api_client
from jupyter_tfenv.catalog.validation import environment_from_dict

DEFAULT_NAMESPACE = "tfenv-kernels"
DEFAULT_IMAGE = "tensorflow/tensorflow:2.20.0-jupyter"
DEFAULT_GPU_IMAGE = "tensorflow/tensorflow:2.20.0-gpu-jupyter"
DEFAULT_RUNNER_LABELS = "app.kubernetes.io/name=tfenv-cluster-test"
REACH_MODES = ("direct", "port-forward")
#: The uid/gid kernels run as: not the image's (root) nor z2jh's 1000, so that the test
#: shows the pod runs as asked.
UID = 54321
GID = 54321
#: Image pulls are slow (TensorFlow GPU images are several GB): generous on purpose.
START_TIMEOUT = 600.0
PULL_TIMEOUT = 1800.0
#: How long a pod may stay unschedulable in tests that expect it to run (autoscalers).
SCHEDULE_TIMEOUT = 300.0
SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclass(frozen=True)
class Settings:
    kubeconfig: str
    namespace: str
    image: str
    gpu_image: str
    storage_class: str | None
    reach: str
    runner_labels: dict[str, str]
    runner_namespace: str


def _labels(text: str) -> dict[str, str]:
    pairs = [p.strip() for p in text.split(",") if p.strip()]
    if not pairs or not all("=" in p for p in pairs):
        pytest.fail(f"TFENV_K8S_RUNNER_LABELS={text!r}: write key=value[,key=value...]")
    return {k.strip(): v.strip() for k, v in (p.split("=", 1) for p in pairs)}


def _own_namespace(default: str) -> str:
    try:
        with open(SA_NAMESPACE_FILE, encoding="utf-8") as f:
            return f.read().strip() or default
    except OSError:
        return default


@pytest.fixture(scope="session")
def settings() -> Settings:
    env = os.environ
    namespace = env.get("TFENV_K8S_NAMESPACE") or DEFAULT_NAMESPACE
    reach = env.get("TFENV_K8S_REACH") or "port-forward"
    if reach not in REACH_MODES:
        pytest.fail(f"TFENV_K8S_REACH={reach!r}: use one of {', '.join(REACH_MODES)}")
    return Settings(
        kubeconfig=env.get("KUBECONFIG", ""),
        namespace=namespace,
        image=env.get("TFENV_K8S_IMAGE") or DEFAULT_IMAGE,
        gpu_image=env.get("TFENV_K8S_GPU_IMAGE") or DEFAULT_GPU_IMAGE,
        storage_class=env.get("TFENV_K8S_STORAGE_CLASS") or None,
        reach=reach,
        runner_labels=_labels(env.get("TFENV_K8S_RUNNER_LABELS") or DEFAULT_RUNNER_LABELS),
        runner_namespace=env.get("TFENV_K8S_RUNNER_NAMESPACE") or _own_namespace(namespace),
    )


def raw(call: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """One client call's JSON answer as a plain dict (camelCase, as the backend reads it),
    not the client's model classes."""
    data = call(*args, _preload_content=False, **kwargs).data
    return dict(json.loads(data)) if data else {}


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 400 else text[:400] + " ..."


@pytest.fixture(scope="session")
def api_client(settings: Settings) -> Iterator[Any]:
    if not settings.kubeconfig:
        pytest.skip("needs a cluster: set KUBECONFIG")
    try:
        api = load_api_client(settings.kubeconfig)
    except Exception as err:
        reason = _short(err.__cause__ or err)
        pytest.skip(f"no cluster: KUBECONFIG={settings.kubeconfig} cannot be loaded: {reason}")
    try:
        raw(client.VersionApi(api).get_code, _request_timeout=5)
    except Exception as err:
        api.close()
        pytest.skip(
            f"no cluster: the API server of KUBECONFIG={settings.kubeconfig} does not answer "
            f"GET /version: {_short(err)}"
        )
    yield api
    api.close()


@pytest.fixture(scope="session")
def namespace(settings: Settings, api_client: Any) -> Any:
    """The kernels' namespace (its JSON), or None where the identity may not read it."""
    try:
        return raw(client.CoreV1Api(api_client).read_namespace, settings.namespace)
    except ApiException as err:
        if err.status == 404:
            pytest.fail(
                f"The kernels' namespace '{settings.namespace}' does not exist: "
                "kubectl apply -f examples/kubernetes/namespace.yaml "
                "(or set TFENV_K8S_NAMESPACE to yours)."
            )
        if err.status == 403:
            return None
        raise


@pytest.fixture
def reach(settings: Settings) -> str:
    """How tests reach kernels; skips where port-forward is asked for without kubectl."""
    if settings.reach == "port-forward" and shutil.which("kubectl") is None:
        pytest.skip(
            "TFENV_K8S_REACH=port-forward (the default) needs kubectl on PATH; install it, "
            "or run the suite in a pod on the cluster with TFENV_K8S_REACH=direct"
        )
    return settings.reach


def _ignore_missing(call: Callable[..., Any], *args: Any) -> None:
    try:
        raw(call, *args)
    except ApiException as err:
        if err.status != 404:
            raise


@pytest.fixture
def user(settings: Settings, api_client: Any, namespace: Any) -> Iterator[str]:
    """A throwaway hub user; its checkpoint claims are deleted after the test."""
    name = f"tfenv-cluster-test-{secrets.token_hex(4)}"
    yield name
    core = client.CoreV1Api(api_client)
    selector = f"{m.LABEL_OWNER}={m.label_value(name)}"
    claims = raw(
        core.list_namespaced_persistent_volume_claim, settings.namespace, label_selector=selector
    )
    for claim in claims.get("items") or []:
        _ignore_missing(
            core.delete_namespaced_persistent_volume_claim,
            claim["metadata"]["name"],
            settings.namespace,
        )


class PortForward:
    """``kubectl port-forward pod/<name> 52000 ... 52004`` to 127.0.0.1, as a subprocess."""

    def __init__(self, namespace: str, pod: str, ports: list[int]) -> None:
        self.ports = ports
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [
                "kubectl",
                "--namespace",
                namespace,
                "port-forward",
                "--address=127.0.0.1",
                f"pod/{pod}",
                *[str(p) for p in ports],
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    async def ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while sum("Forwarding from" in line for line in self.lines) < len(self.ports):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"kubectl port-forward {self.proc.args!r} is not forwarding "
                    f"(exit code {self.proc.poll()}): {' | '.join(self.lines)}"
                )
            await asyncio.sleep(0.2)

    async def probe(self) -> bool:
        """Whether each port reaches a listener in the pod: a connection opened and closed,
        then no error from kubectl (a kernel not yet listening gives "connection refused",
        after which recent kubectl versions stop forwarding)."""
        seen = len(self.lines)
        for port in self.ports:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.sleep(0.5)
            writer.close()
            await writer.wait_closed()
        await asyncio.sleep(1.0)
        news = self.lines[seen:]
        return self.proc.poll() is None and not any("error" in line.lower() for line in news)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Kernels:
    """Kernel pods of one test: started, reached, executed in, and removed afterwards."""

    def __init__(self, settings: Settings, api_client: Any, user: str) -> None:
        self.settings = settings
        self.api_client = api_client
        self.user = user
        self.namespace = settings.namespace
        self.key = secrets.token_hex(32)
        self.core = client.CoreV1Api(api_client)
        self.net = client.NetworkingV1Api(api_client)
        self.pods: list[str] = []
        self.secrets: list[str] = []
        self.policies: list[str] = []
        self.forwards: list[PortForward] = []

    def backend(self, *, schedule_timeout: float = SCHEDULE_TIMEOUT) -> KubernetesAPI:
        """The broker's backend. With TFENV_K8S_REACH=direct the kernels' NetworkPolicies
        admit the test runner's pod (TFENV_K8S_RUNNER_LABELS/_NAMESPACE), not a hub
        server's; port-forwards enter the pod's own network namespace, past policies."""
        kw: dict[str, Any] = {}
        if self.settings.reach == "direct":
            labels = dict(self.settings.runner_labels)
            kw["server_selector"] = lambda username, server_name: labels
            kw["server_namespace"] = self.settings.runner_namespace
        return KubernetesAPI(
            self.api_client,
            self.namespace,
            pull_timeout=PULL_TIMEOUT,
            schedule_timeout=schedule_timeout,
            poll_interval=1.0,
            **kw,
        )

    def start_of(self, entry: dict[str, Any]) -> m.KernelStart:
        """A start of the catalog entry ``entry`` for this test's user (a new kernel id)."""
        return m.KernelStart(
            env=environment_from_dict(entry),
            username=self.user,
            uid=UID,
            gid=GID,
            kernel_id=str(uuid.uuid4()),
            namespace=self.namespace,
            storage=m.StorageOptions(storage_class=self.settings.storage_class, size="1Gi"),
        )

    def track(self, start: m.KernelStart) -> None:
        """Remove this start's pod, Secret and NetworkPolicy after the test, whatever happens."""
        self.pods.append(m.pod_name(start))
        self.secrets.append(m.secret_name(start))
        self.policies.append(m.network_policy_name(start))

    async def start(self, backend: KubernetesAPI, start: m.KernelStart) -> StartedPod:
        self.track(start)
        return await backend.start(start, self.key, start_timeout=START_TIMEOUT)

    async def connect(self, start: m.KernelStart, pod: StartedPod) -> dict[str, Any]:
        """The client's connection info of a running kernel pod, direct or port-forwarded."""
        if self.settings.reach == "direct":
            return m.connection_info(start, self.key, ip=pod.ip)
        ports = list(start.ports.by_name().values())
        deadline = time.monotonic() + 120
        while True:
            forward = PortForward(self.namespace, pod.name, ports)
            self.forwards.append(forward)
            await forward.ready()
            # A running pod's kernel may need a second more to listen: forward again.
            if await forward.probe():
                return m.connection_info(start, self.key, ip="127.0.0.1")
            forward.stop()
            self.forwards.remove(forward)
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the kernel of pod {pod.name} does not listen on {ports} after 120 s: "
                    + " | ".join(forward.lines)
                )
            await asyncio.sleep(2)

    async def run(self, info: dict[str, Any], code: str, timeout: float = 300.0) -> str:
        """Execute ``code`` in the kernel; its stdout (fails on an error)."""
        kc = AsyncKernelClient()
        kc.load_connection_info(info)  # type: ignore[arg-type]
        kc.start_channels()
        try:
            try:
                await kc.wait_for_ready(timeout=180)
            except RuntimeError as err:
                raise AssertionError(
                    f"the kernel at {info['ip']}:{info['shell_port']} does not answer ({err}); "
                    f"TFENV_K8S_REACH={self.settings.reach}: with 'direct' the runner must be "
                    "on the pod network, its pod labelled TFENV_K8S_RUNNER_LABELS"
                ) from err
            msg_id = kc.execute(code)
            stdout, errors = "", []
            while True:
                msg = await kc.get_iopub_msg(timeout=timeout)
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind == "stream" and content.get("name") == "stdout":
                    stdout += content["text"]
                elif kind == "error":
                    errors.append(f"{content['ename']}: {content['evalue']}")
                elif kind == "status" and content["execution_state"] == "idle":
                    break
            assert not errors, f"{code!r} failed in the kernel: {errors}"
            return stdout
        finally:
            kc.stop_channels()

    def stop_forwards(self) -> None:
        while self.forwards:
            self.forwards.pop().stop()

    def cleanup(self) -> None:
        self.stop_forwards()
        ns = self.namespace
        for name in self.pods:
            _ignore_missing(self.core.delete_namespaced_pod, name, ns)
        for name in self.policies:
            _ignore_missing(self.net.delete_namespaced_network_policy, name, ns)
        for name in self.secrets:
            _ignore_missing(self.core.delete_namespaced_secret, name, ns)


@pytest.fixture
def kernels(settings: Settings, api_client: Any, user: str) -> Iterator[Kernels]:
    tracker = Kernels(settings, api_client, user)
    yield tracker
    tracker.cleanup()


async def gone(read: Callable[..., Any], *args: Any, timeout: float = 60.0) -> bool:
    """Whether ``read(*args)`` answers 404 within ``timeout`` seconds (polled each second)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await asyncio.to_thread(raw, read, *args)
        except ApiException as err:
            if err.status == 404:
                return True
            raise
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(1)
