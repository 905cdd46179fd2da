"""Kubernetes kernels (issue 11), tier 1: generated objects, validated offline.

No cluster is involved. Every object jupyter_tfenv.backends.kubernetes.manifests generates
is validated
strictly (unknown fields are errors) against the official Kubernetes schemas that the
``kubernetes-validate`` package bundles, for two supported Kubernetes versions, with the
network blocked; pods are checked against the restricted Pod Security Standard by
jupyter_tfenv.backends.kubernetes.pss, which must also catch each violation in a deliberately
broken copy.
What a cluster or a real kernel would show (admission, scheduling, the kernel answering
over TCP) is for tiers 2 and 3 (docs/kubernetes.md).
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import socket
import subprocess
import sys
from queue import Empty

import kubernetes_validate
import pytest
from jupyter_client import BlockingKernelClient
from kubernetes_validate.utils import all_versions

from jupyter_tfenv.backends.docker.engine import KernelRequest, container_spec
from jupyter_tfenv.backends.kubernetes import manifests as m
from jupyter_tfenv.backends.kubernetes.pss import check_pod, is_extended_resource, parse_quantity
from jupyter_tfenv.catalog.validation import environment_from_dict
from jupyter_tfenv.core.labels import LABEL_ENVIRONMENT, LABEL_KERNEL_ID, LABEL_OWNER
from jupyter_tfenv.errors import CatalogError

#: The Kubernetes versions validated against (the oldest and a recent one supported).
K8S_VERSIONS = ("1.30", "1.33")
KEY = "f" * 64
KERNEL_ID = "1b2c3d4e-0000-4000-8000-123456789abc"
DIGEST = "sha256:" + "ab" * 32
LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

PLACEMENT = {
    "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "pool": "gpu"},
    "tolerations": [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {
            "key": "dedicated",
            "operator": "Equal",
            "value": "ml",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        },
    ],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                ]
            }
        }
    },
}


def env_of(**entry):
    return environment_from_dict(
        {"id": "tf220", "image": "tensorflow/tensorflow:2.20.0-jupyter", **entry}
    )


GPU_ENV = {
    "id": "tf220-gpu",
    "image": "tensorflow/tensorflow:2.20.0-gpu-jupyter",
    "gpus": 2,
    "resources": {"memory": "16g", "cpus": 2.5, "shm_size": "1g"},
    "network": "bridge",
    "kubernetes": PLACEMENT,
}


def start_of(env=None, **kwargs):
    values = {
        "env": env or env_of(),
        "username": "alice",
        "uid": 1000,
        "gid": 1000,
        "kernel_id": KERNEL_ID,
        "namespace": "tfenv-kernels",
        **kwargs,
    }
    return m.KernelStart(**values)


#: Starts that cover the generator's branches: CPU, GPU with placement and shm, a
#: catalog digest, a locked digest, a named server, an odd user name, a storage class.
STARTS = {
    "cpu": start_of,
    "gpu-placement": lambda: start_of(environment_from_dict(GPU_ENV), digest=DIGEST),
    "catalog-digest": lambda: start_of(
        env_of(image=f"tensorflow/tensorflow:2.20.0-jupyter@{DIGEST}", tensorflow="2.20.0")
    ),
    "named-server-odd-user": lambda: start_of(
        username="Bob.Smith@example.org", server_name="big gpu run!", uid=54321, gid=600
    ),
    "storage-class-defaults": lambda: start_of(
        storage=m.StorageOptions(
            storage_class="fast-rwx", size="50Gi", access_modes=("ReadWriteMany",)
        ),
        default_memory=4 * 1024**3,
        default_cpus=1.0,
    ),
}


def block_network(monkeypatch):
    """Any connection or name lookup from now on fails the test (offline tests)."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network use during an offline test: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(autouse=True)
def no_network(request, monkeypatch):
    """Validation must work offline: any connection or name lookup fails the test."""
    if request.node.name.startswith("test_local_"):
        return  # a local kernel process over loopback TCP
    block_network(monkeypatch)


def validate(obj, version):
    return kubernetes_validate.validate(obj, version, strict=True)


def all_objects(start):
    objects = m.kernel_objects(start, KEY)
    return [*objects.all(), m.default_deny_policy(start.namespace)]


def matches(selector, labels):
    """A matchLabels selector (the only kind generated) against a pod's labels."""
    assert set(selector) == {"matchLabels"}, selector
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def kernel(pod):
    (container,) = pod["spec"]["containers"]
    return container


# --- the schemas ------------------------------------------------------------------------


def test_the_bundled_schemas_cover_the_versions_and_work_offline():
    bundled = {".".join(v.split(".")[:2]) for v in all_versions()}
    assert set(K8S_VERSIONS) <= bundled
    with pytest.raises(AssertionError, match="network use"):
        socket.create_connection(("kubernetes.io", 443))
    # The answer names the schema version used: the one asked for, not a fallback.
    for version in K8S_VERSIONS:
        assert validate(m.kernel_pod(start_of()), version) == version


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", sorted(STARTS))
def test_every_generated_object_is_valid_strictly(name, version):
    start = STARTS[name]()
    objects = all_objects(start)
    assert [o["kind"] for o in objects] == [
        "Secret",
        "PersistentVolumeClaim",
        "Pod",
        "NetworkPolicy",
        "NetworkPolicy",
    ]
    pod = m.kernel_pod(start)
    owned = m.with_owner(
        m.connection_secret(start, KEY),
        {**pod, "metadata": {**pod["metadata"], "uid": "7f0c1c4e-1111-4222-8333-444455556666"}},
    )
    for obj in [*objects, owned]:
        assert validate(obj, version) == version
        name_ = obj["metadata"]["name"]
        assert DNS_LABEL_RE.match(name_) and len(name_) <= 63, name_
        for key, value in obj["metadata"]["labels"].items():
            assert LABEL_VALUE_RE.match(value) and len(value) <= 63, (key, value)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(
    "breakage",
    [
        # A misspelt field: strict mode refuses what the API server would drop silently.
        lambda pod: kernel(pod).__setitem__("volumeMount", []),
        lambda pod: pod["spec"]["securityContext"].__setitem__("runAsUser", "1000"),
        lambda pod: kernel(pod)["ports"][0].__setitem__("containerPort", "shell"),
        lambda pod: pod["spec"].__setitem__("restartPolicy", ["Never"]),
    ],
    ids=["unknown-field", "uid-as-string", "port-as-string", "policy-as-list"],
)
def test_the_schema_validation_can_fail(breakage, version):
    pod = m.kernel_pod(start_of())
    breakage(pod)
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(pod, version)


# --- the restricted Pod Security Standard --------------------------------------------------


@pytest.mark.parametrize("name", sorted(STARTS))
def test_generated_pods_meet_the_restricted_standard(name):
    pod = m.kernel_pod(STARTS[name]())
    assert check_pod(pod) == []
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert spec["restartPolicy"] == "Never"
    assert not any(spec[k] for k in ("hostNetwork", "hostPID", "hostIPC"))
    for container in [*spec["initContainers"], *spec["containers"]]:
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not any("hostPort" in p for p in container.get("ports", []))
    assert all(
        set(v) - {"name"} <= {"secret", "persistentVolumeClaim", "emptyDir"}
        for v in spec["volumes"]
    )


def _gpu_pod():
    return m.kernel_pod(start_of(environment_from_dict(GPU_ENV)))


def _drop_seccomp(pod):
    del pod["spec"]["securityContext"]["seccompProfile"]
    del kernel(pod)["securityContext"]["seccompProfile"]


BROKEN = {
    "runAsNonRoot-false": (
        lambda pod: kernel(pod)["securityContext"].__setitem__("runAsNonRoot", False),
        "Running as Non-root",
    ),
    "pod-runAsNonRoot-false": (
        lambda pod: pod["spec"]["securityContext"].__setitem__("runAsNonRoot", False),
        "Running as Non-root",
    ),
    "runAsNonRoot-missing": (
        lambda pod: (
            [
                c["securityContext"].pop("runAsNonRoot")
                for c in [*pod["spec"]["containers"], *pod["spec"]["initContainers"]]
            ]
            and pod["spec"]["securityContext"].pop("runAsNonRoot")
        ),
        "Running as Non-root",
    ),
    "runAsUser-0": (
        lambda pod: kernel(pod)["securityContext"].__setitem__("runAsUser", 0),
        "Running as Non-root user",
    ),
    "capability-added": (
        lambda pod: kernel(pod)["securityContext"]["capabilities"].__setitem__(
            "add", ["SYS_ADMIN"]
        ),
        "Capabilities (baseline)",
    ),
    "baseline-capability-added": (
        lambda pod: pod["spec"]["initContainers"][0]["securityContext"]["capabilities"].__setitem__(
            "add", ["CHOWN"]
        ),
        "Capabilities",
    ),
    "drop-all-missing": (
        lambda pod: kernel(pod)["securityContext"]["capabilities"].__setitem__("drop", ["NET_RAW"]),
        "Capabilities",
    ),
    "hostPath-volume": (
        lambda pod: pod["spec"]["volumes"].append(
            {"name": "data", "hostPath": {"path": "/var/run/docker.sock"}}
        ),
        "HostPath Volumes",
    ),
    "nfs-volume": (
        lambda pod: pod["spec"]["volumes"].append(
            {"name": "data", "nfs": {"server": "nfs", "path": "/export"}}
        ),
        "Volume Types",
    ),
    "privileged": (
        lambda pod: kernel(pod)["securityContext"].__setitem__("privileged", True),
        "Privileged Containers",
    ),
    "allowPrivilegeEscalation": (
        lambda pod: kernel(pod)["securityContext"].__setitem__("allowPrivilegeEscalation", True),
        "Privilege Escalation",
    ),
    "seccomp-missing": (_drop_seccomp, "Seccomp"),
    "seccomp-unconfined": (
        lambda pod: kernel(pod)["securityContext"].__setitem__(
            "seccompProfile", {"type": "Unconfined"}
        ),
        "Seccomp",
    ),
    "hostNetwork": (lambda pod: pod["spec"].__setitem__("hostNetwork", True), "Host Namespaces"),
    "hostPID": (lambda pod: pod["spec"].__setitem__("hostPID", True), "Host Namespaces"),
    "hostPort": (lambda pod: kernel(pod)["ports"][0].__setitem__("hostPort", 52000), "Host Ports"),
    "procMount": (
        lambda pod: kernel(pod)["securityContext"].__setitem__("procMount", "Unmasked"),
        "/proc Mount Type",
    ),
    "selinux-type": (
        lambda pod: pod["spec"]["securityContext"].__setitem__("seLinuxOptions", {"type": "spc_t"}),
        "SELinux",
    ),
    "unsafe-sysctl": (
        lambda pod: pod["spec"]["securityContext"].__setitem__(
            "sysctls", [{"name": "kernel.msgmax", "value": "1"}]
        ),
        "Sysctls",
    ),
    "apparmor-unconfined": (
        lambda pod: kernel(pod)["securityContext"].__setitem__(
            "appArmorProfile", {"type": "Unconfined"}
        ),
        "AppArmor",
    ),
    "gpu-requests-differ": (
        lambda pod: kernel(pod)["resources"]["requests"].__setitem__("nvidia.com/gpu", "1"),
        "Extended Resources",
    ),
    "gpu-requests-missing": (
        lambda pod: kernel(pod)["resources"]["requests"].pop("nvidia.com/gpu"),
        "Extended Resources",
    ),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_the_checker_catches_each_violation(name):
    breakage, rule = BROKEN[name]
    pod = _gpu_pod()
    assert check_pod(pod) == []
    breakage(pod)
    violations = check_pod(pod)
    assert violations and {v.rule for v in violations} == {rule}, violations
    assert all(v.path and v.message for v in violations)
    # The schema accepts every broken copy: only the PSS checker stands between it and
    # an admission refusal.
    assert validate(pod, "1.33") == "1.33"


def test_the_checker_reads_every_container_kind():
    pod = _gpu_pod()
    pod["spec"]["ephemeralContainers"] = [{"name": "debug", "image": "busybox:1.36"}]
    rules = {v.rule for v in check_pod(pod)}
    assert rules == {"Privilege Escalation", "Capabilities"}
    assert all("ephemeralContainers[0]" in v.path for v in check_pod(pod))


@pytest.mark.parametrize(
    ("left", "right", "equal"),
    [
        ("1", 1, True),
        ("1000m", "1", True),
        ("2", "2000m", True),
        ("1Gi", "1G", False),
        ("1e3", "1k", True),
        ("8Gi", str(8 * 1024**3), True),
        ("1", "2", False),
    ],
)
def test_quantities_compare_by_value(left, right, equal):
    assert (parse_quantity(left) == parse_quantity(right)) is equal


def test_extended_resources_are_told_apart():
    assert is_extended_resource("nvidia.com/gpu") and is_extended_resource("hugepages-2Mi")
    assert not any(map(is_extended_resource, ["cpu", "memory", "ephemeral-storage"]))
    pod = _gpu_pod()
    kernel(pod)["resources"]["requests"]["cpu"] = "1"  # native: requests may be below limits
    assert check_pod(pod) == []


# --- image, GPUs, resources, placement ------------------------------------------------------


def test_a_locked_digest_pins_the_pod_image():
    assert kernel(m.kernel_pod(start_of()))["image"] == "tensorflow/tensorflow:2.20.0-jupyter"
    pinned = m.kernel_pod(start_of(digest=DIGEST))
    assert kernel(pinned)["image"] == f"tensorflow/tensorflow@{DIGEST}"
    # The init container runs the same bits; the tag stays readable in an annotation.
    assert pinned["spec"]["initContainers"][0]["image"] == kernel(pinned)["image"]
    assert pinned["metadata"]["annotations"]["org.jupyter.tfenv.image-ref"].endswith(
        ":2.20.0-jupyter"
    )
    catalog = env_of(image=f"tensorflow/tensorflow:2.20.0-jupyter@{DIGEST}", tensorflow="2.20.0")
    assert kernel(m.kernel_pod(start_of(catalog)))["image"] == f"tensorflow/tensorflow@{DIGEST}"
    assert kernel(m.kernel_pod(start_of(catalog, digest=DIGEST)))["image"].endswith(DIGEST)
    with pytest.raises(m.KubernetesManifestError, match="the lock says"):
        m.kernel_pod(start_of(catalog, digest="sha256:" + "cd" * 32))
    with pytest.raises(m.KubernetesManifestError, match="malformed"):
        m.kernel_pod(start_of(digest="sha256:XYZ"))
    with pytest.raises(m.KubernetesManifestError, match="jupyter tfenv lock tf220"):
        m.kernel_pod(start_of(require_digest=True))
    assert m.kernel_pod(start_of(catalog, require_digest=True))


def test_gpu_count_becomes_equal_requests_and_limits():
    pod = _gpu_pod()
    resources = kernel(pod)["resources"]
    assert resources["limits"] == {
        "memory": str(16 * 1024**3),
        "cpu": "2500m",
        "nvidia.com/gpu": "2",
    }
    assert resources["requests"] == resources["limits"]
    env = {e["name"]: e["value"] for e in kernel(pod)["env"]}
    assert "NVIDIA_VISIBLE_DEVICES" not in env  # the device plugin chooses
    mig = m.kernel_pod(start_of(env_of(gpus=1), gpu_resource="nvidia.com/mig-1g.10gb"))
    assert kernel(mig)["resources"]["limits"] == {"nvidia.com/mig-1g.10gb": "1"}


def test_cpu_kernels_see_no_gpu():
    pod = m.kernel_pod(start_of())
    assert "resources" not in kernel(pod)
    env = {e["name"]: e["value"] for e in kernel(pod)["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void" and env["CUDA_VISIBLE_DEVICES"] == ""
    for pod in (m.kernel_pod(start_of()), _gpu_pod()):  # preparing storage needs no GPU
        (prepare,) = pod["spec"]["initContainers"]
        assert prepare["env"] == [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"}]
        assert set(prepare["resources"]["limits"]) == {"cpu", "memory"}


def test_gpus_all_and_device_ids_are_refused_with_a_fix():
    with pytest.raises(m.KubernetesManifestError, match=r"gpus: all.*Set gpus to a count"):
        m.kernel_pod(start_of(env_of(gpus="all")))
    with pytest.raises(m.KubernetesManifestError, match=r"device id.*gpus: 2"):
        m.kernel_pod(start_of(env_of(gpus=["0", "GPU-1234"])))


def test_placement_comes_from_the_catalog():
    spec = _gpu_pod()["spec"]
    assert spec["nodeSelector"] == PLACEMENT["node_selector"]
    assert spec["tolerations"] == PLACEMENT["tolerations"]
    assert spec["affinity"] == PLACEMENT["affinity"]
    assert not {"nodeSelector", "tolerations", "affinity"} & set(m.kernel_pod(start_of())["spec"])


def test_shm_size_is_a_memory_backed_dev_shm():
    pod = _gpu_pod()
    (shm,) = [v for v in pod["spec"]["volumes"] if v["name"] == "shm"]
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": str(1024**3)}
    assert {"name": "shm", "mountPath": "/dev/shm"} in kernel(pod)["volumeMounts"]


def test_what_a_restricted_pod_cannot_be_is_refused():
    with pytest.raises(m.KubernetesManifestError, match="root"):
        m.kernel_pod(start_of(uid=0))
    with pytest.raises(m.KubernetesManifestError, match="hostPath"):
        m.kernel_pod(start_of(env_of(mounts=[{"source": "/srv/data", "target": "/data"}])))
    with pytest.raises(m.KubernetesManifestError, match="namespace"):
        m.kernel_pod(start_of(namespace="Kernels_NS"))
    with pytest.raises(m.KubernetesManifestError, match="namespace"):
        m.default_deny_policy("-")
    with pytest.raises(m.KubernetesManifestError, match="unprivileged"):
        m.KernelPorts(shell=80)
    with pytest.raises(m.KubernetesManifestError, match="five different"):
        m.KernelPorts(shell=52001)


# --- labels -------------------------------------------------------------------------------


def test_labels_are_the_docker_backends_and_valid():
    from jupyter_tfenv.core.labels import LABEL_HUB_SERVER

    assert m.LABEL_HUB_SERVER == LABEL_HUB_SERVER
    start = start_of(server_name="gpu")
    labels = m.kernel_pod(start)["metadata"]["labels"]
    assert labels[LABEL_OWNER] == "alice" and labels[LABEL_ENVIRONMENT] == "tf220"
    assert labels[LABEL_KERNEL_ID] == KERNEL_ID and labels[LABEL_HUB_SERVER] == "gpu"
    assert labels["org.jupyter.tfenv.uid"] == "1000"


@pytest.mark.parametrize(
    "value",
    [
        "alice",
        "",
        "Bob.Smith@example.org",
        "-lead",
        "trail_",
        "ünïcødé",
        "a/b c",
        "x" * 200,
        "." * 70,
        "tf-",
    ],
)
def test_label_values_are_sanitized(value):
    label = m.label_value(value)
    assert LABEL_VALUE_RE.match(label) and len(label) <= 63
    if LABEL_VALUE_RE.match(value) and len(value) <= 63 and "--" not in value:
        assert label == value  # valid values are kept as they are


def test_sanitized_labels_and_names_never_collide():
    assert m.label_value("a@b") != m.label_value("a-b") == "a-b"
    assert m.label_value("x" * 64) != m.label_value("x" * 65)
    assert m.label_value("Alice") != m.label_value("alice")
    names = {
        m.pvc_name(start_of(username=user, env=env_of(id=env)))
        for user in ("alice", "Alice", "a-lice", "alice@x")
        for env in ("tf220", "tf220-gpu", "tf")
    }
    assert len(names) == 12
    assert all(DNS_LABEL_RE.match(n) and len(n) <= 63 for n in names)
    # The exact values stay readable.
    pod = m.kernel_pod(start_of(username="Bob.Smith@example.org", server_name="big gpu run!"))
    assert pod["metadata"]["annotations"][LABEL_OWNER] == "Bob.Smith@example.org"
    assert pod["metadata"]["annotations"][m.LABEL_HUB_SERVER] == "big gpu run!"


# --- the connection file ----------------------------------------------------------------------


def test_the_connection_file_is_an_immutable_secret_mounted_read_only():
    start = start_of(environment_from_dict(GPU_ENV))
    objects = m.kernel_objects(start, KEY)
    secret, pod = objects.secret, objects.pod
    assert secret["immutable"] is True and secret["type"] == "Opaque"
    info = json.loads(base64.b64decode(secret["data"][m.CONNECTION_FILE]))
    assert info == {
        "transport": "tcp",
        "ip": "0.0.0.0",
        "shell_port": 52000,
        "iopub_port": 52001,
        "stdin_port": 52002,
        "control_port": 52003,
        "hb_port": 52004,
        "key": KEY,
        "signature_scheme": "hmac-sha256",
        "kernel_name": "tfenv-tf220-gpu",
    }
    (volume,) = [v for v in pod["spec"]["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert volume["secret"]["items"] == [{"key": "kernel.json", "path": "kernel.json"}]
    assert volume["secret"]["defaultMode"] == 0o440  # root:fsGroup, read, never write
    mounts = [
        mt
        for c in pod["spec"]["containers"] + pod["spec"]["initContainers"]
        for mt in c["volumeMounts"]
        if mt["name"] == volume["name"]
    ]
    assert mounts == [{"name": "connection", "mountPath": "/tfenv/connection", "readOnly": True}]
    command = kernel(pod)["command"]
    assert command[command.index("-f") + 1] == "/tfenv/connection/kernel.json"
    assert "--ip=0.0.0.0" in command and "--transport=tcp" in command
    # The key is in the Secret's file only: no variable, no envFrom, no secretKeyRef.
    for container in pod["spec"]["containers"] + pod["spec"]["initContainers"]:
        assert "envFrom" not in container
        for var in container.get("env", []):
            assert set(var) == {"name", "value"} and KEY not in var["value"]
    assert KEY not in json.dumps(pod) and KEY not in json.dumps(objects.network_policy)
    # The server connects to the pod IP with the same ports and key.
    client = m.connection_info(start, KEY, ip="10.1.2.3")
    assert client == {**info, "ip": "10.1.2.3"}


def test_local_ipykernel_runs_from_the_read_only_connection_file(tmp_path):
    """Not a pod: the kernel command, run here, with the Secret's file read-only."""
    ports = m.KernelPorts(shell=47310, iopub=47311, stdin=47312, control=47313, hb=47314)
    start = start_of(ports=ports)
    secret = m.connection_secret(start, KEY)
    folder = tmp_path / "connection"
    folder.mkdir()
    path = folder / m.CONNECTION_FILE
    path.write_bytes(base64.b64decode(secret["data"][m.CONNECTION_FILE]))
    path.chmod(0o444)
    folder.chmod(0o555)  # as a Secret volume: nothing can be written there
    written = path.read_bytes(), path.stat().st_mtime_ns  # (root ignores the modes)
    command = m.kernel_command(start)
    command[0] = sys.executable
    command[command.index("-f") + 1] = str(path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "JPY"))}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    clients = []
    try:
        for key in (KEY, "0" * 64):
            client = BlockingKernelClient()
            client.load_connection_info(m.connection_info(start, key, ip="127.0.0.1"))
            client.start_channels()
            clients.append(client)
        good, wrong = clients
        good.wait_for_ready(timeout=60)
        good.execute("x = 6 * 7")
        assert good.get_shell_msg(timeout=30)["content"]["status"] == "ok"
        # Authenticated: a client without the key gets no answer.
        wrong.execute("x = 0")
        with pytest.raises(Empty):
            wrong.get_shell_msg(timeout=3)
        good.execute("", user_expressions={"x": "x"})
        reply = good.get_shell_msg(timeout=30)["content"]
        assert reply["user_expressions"]["x"]["data"]["text/plain"] == "42"  # not run: 0
        assert proc.poll() is None, "the kernel exited"
    finally:
        for client in clients:
            client.stop_channels()
        proc.terminate()
        output = proc.communicate(timeout=30)[0].decode(errors="replace")
        folder.chmod(0o755)
    assert "Permission denied" not in output and "Read-only" not in output, output
    assert "Invalid Signature" in output  # the kernel refused the keyless client's message
    # The kernel never rewrote its file (it would, were its options not the file's).
    assert (path.read_bytes(), path.stat().st_mtime_ns) == written


def test_the_secret_goes_with_its_pod():
    start = start_of()
    secret, pod = m.connection_secret(start, KEY), m.kernel_pod(start)
    with pytest.raises(m.KubernetesManifestError, match="uid"):
        m.with_owner(secret, pod)  # not created yet: no uid
    created = copy.deepcopy(pod)
    created["metadata"]["uid"] = "7f0c1c4e-1111-4222-8333-444455556666"
    owned = m.with_owner(secret, created)
    assert owned["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": pod["metadata"]["name"],
            "uid": "7f0c1c4e-1111-4222-8333-444455556666",
        }
    ]
    assert "ownerReferences" not in secret["metadata"]  # the original is untouched
    assert owned["data"] == secret["data"] and owned["immutable"] is True
    assert m.with_owner(owned, created) == owned  # idempotent
    elsewhere = copy.deepcopy(created)
    elsewhere["metadata"]["namespace"] = "other"
    with pytest.raises(m.KubernetesManifestError, match="same namespace"):
        m.with_owner(secret, elsewhere)


# --- checkpoints ---------------------------------------------------------------------------------


def test_one_checkpoint_claim_per_user_and_environment():
    pvc = m.checkpoint_pvc(start_of())
    assert "storageClassName" not in pvc["spec"]  # the cluster's default class
    assert pvc["spec"]["resources"] == {"requests": {"storage": "10Gi"}}
    assert "ownerReferences" not in pvc["metadata"]  # it outlives every pod
    assert pvc["metadata"]["labels"][LABEL_OWNER] == "alice"
    custom = m.checkpoint_pvc(STARTS["storage-class-defaults"]())
    assert custom["spec"]["storageClassName"] == "fast-rwx"
    assert custom["spec"]["accessModes"] == ["ReadWriteMany"]
    assert custom["spec"]["resources"]["requests"]["storage"] == "50Gi"
    same = m.checkpoint_pvc(start_of(kernel_id="another-kernel", server_name="x"))
    assert same["metadata"]["name"] == pvc["metadata"]["name"]
    assert m.pvc_name(start_of(username="bob")) != pvc["metadata"]["name"]
    assert m.pvc_name(start_of(env_of(id="tf219"))) != pvc["metadata"]["name"]


def test_the_claim_is_mounted_at_checkpoints_and_logs():
    start = start_of()
    pod = m.kernel_pod(start)
    (volume,) = [v for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert volume["persistentVolumeClaim"] == {"claimName": m.pvc_name(start)}
    mounts = {
        mt["mountPath"]: mt for mt in kernel(pod)["volumeMounts"] if mt["name"] == volume["name"]
    }
    assert mounts == {
        "/tfenv/checkpoints": {
            "name": "storage",
            "mountPath": "/tfenv/checkpoints",
            "subPath": "checkpoints",
        },
        "/tfenv/logs": {"name": "storage", "mountPath": "/tfenv/logs", "subPath": "logs"},
    }
    env = {e["name"]: e["value"] for e in kernel(pod)["env"]}
    assert env["TFENV_CHECKPOINT_DIR"] == "/tfenv/checkpoints"
    assert env["TFENV_LOG_DIR"] == "/tfenv/logs"
    # The subPaths exist (as the user, fsGroup) before the kernel mounts them.
    (prepare,) = pod["spec"]["initContainers"]
    assert prepare["volumeMounts"] == [{"name": "storage", "mountPath": "/tfenv/storage"}]
    script = prepare["command"][-1]
    assert "'checkpoints', 'logs'" in script and "/tfenv/storage" in script
    compile(script, "prepare-storage", "exec")
    assert pod["spec"]["securityContext"]["fsGroup"] == 1000


# --- the NetworkPolicy -------------------------------------------------------------------------


def test_only_the_owners_server_reaches_the_kernel_ports():
    start = start_of(server_name="gpu")
    pod = m.kernel_pod(start)
    policy = m.kernel_network_policy(start)
    spec = policy["spec"]
    assert matches(spec["podSelector"], pod["metadata"]["labels"])
    other_kernel = m.kernel_pod(start_of(kernel_id="0000-other"))
    other_user = m.kernel_pod(start_of(username="bob"))
    assert not matches(spec["podSelector"], other_kernel["metadata"]["labels"])
    assert not matches(spec["podSelector"], other_user["metadata"]["labels"])
    (rule,) = spec["ingress"]
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"}  # this namespace only
    server = {
        "component": "singleuser-server",
        "hub.jupyter.org/username": "alice",
        "hub.jupyter.org/servername": "gpu",
        "app": "jupyterhub",
    }
    assert matches(peer["podSelector"], server)
    assert not matches(peer["podSelector"], {**server, "hub.jupyter.org/username": "bob"})
    assert not matches(peer["podSelector"], {**server, "hub.jupyter.org/servername": "cpu"})
    assert not matches(peer["podSelector"], {"hub.jupyter.org/username": "alice"})
    ports = sorted(p["port"] for p in rule["ports"])
    assert ports == sorted(p["containerPort"] for p in kernel(pod)["ports"])
    assert ports == [52000, 52001, 52002, 52003, 52004]
    assert {p["protocol"] for p in rule["ports"]} == {"TCP"}
    # network: none (the catalog default) → no egress at all, as on Docker.
    assert spec["policyTypes"] == ["Ingress", "Egress"] and spec["egress"] == []


def test_network_policy_options():
    ports = m.KernelPorts(shell=6000, iopub=6001, stdin=6002, control=6003, hb=6004)
    start = start_of(environment_from_dict(GPU_ENV), ports=ports)
    policy = m.kernel_network_policy(
        start, {"app": "jupyterhub", "owner": "alice"}, server_namespace="jhub"
    )
    (peer,) = policy["spec"]["ingress"][0]["from"]
    assert peer == {
        "podSelector": {"matchLabels": {"app": "jupyterhub", "owner": "alice"}},
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "jhub"}},
    }
    assert [p["port"] for p in policy["spec"]["ingress"][0]["ports"]] == list(range(6000, 6005))
    # network: bridge → public addresses and DNS only (issue 17), never private ranges.
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["egress"] == m.public_egress_rules()
    with pytest.raises(m.KubernetesManifestError, match="empty"):
        m.kernel_network_policy(start, {})  # an empty selector is every pod
    deny = m.default_deny_policy("tfenv-kernels")
    assert matches(deny["spec"]["podSelector"], m.kernel_pod(start)["metadata"]["labels"])
    assert "ingress" not in deny["spec"] and deny["spec"]["policyTypes"] == ["Ingress"]


# --- the catalog field ------------------------------------------------------------------------


def test_the_catalog_kubernetes_field_round_trips():
    env = environment_from_dict(GPU_ENV)
    assert env.kubernetes == PLACEMENT
    assert environment_from_dict(env.to_config()) == env
    assert "kubernetes" not in env_of().to_config()


@pytest.mark.parametrize(
    ("kubernetes", "field"),
    [
        ({"nodeSelector": {"a": "b"}}, "kubernetes"),
        ({"node_selector": {"bad key!": "b"}}, "kubernetes.node_selector"),
        ({"node_selector": {"pool": "not a value"}}, "kubernetes.node_selector.pool"),
        (
            {"tolerations": [{"key": "gpu", "operator": "Maybe"}]},
            "kubernetes.tolerations.0.operator",
        ),
        (
            {"tolerations": [{"key": "gpu", "operator": "Exists", "value": "x"}]},
            "kubernetes.tolerations.0.value",
        ),
        ({"tolerations": [{"key": "g", "tolerationSeconds": 5}]}, "kubernetes.tolerations.0"),
        ({"tolerations": [{"key": "gpu", "effects": "NoSchedule"}]}, "kubernetes.tolerations.0"),
        ({"affinity": {"nodeAfinity": {}}}, "kubernetes.affinity"),
        ({"affinity": {"nodeAffinity": []}}, "kubernetes.affinity.nodeAffinity"),
    ],
)
def test_the_catalog_kubernetes_field_is_validated(kubernetes, field):
    with pytest.raises(CatalogError) as caught:
        env_of(kubernetes=kubernetes)
    assert caught.value.message.startswith(f"{field}: "), caught.value.message


def test_the_docker_backend_ignores_the_kubernetes_field():
    request = KernelRequest(
        kernel_id=KERNEL_ID,
        cmd=["python3"],
        uid=1000,
        gid=1000,
        owner="alice",
        workdir="/tmp",
        notebook_mount=None,
        runtime_dir="/tmp/rt",
        runtimes_dir=None,
        image_id="sha256:" + "0" * 64,
        environment={},
    )
    entry = dict(GPU_ENV, network="none")
    placed = container_spec(environment_from_dict(entry), request)
    plain = container_spec(
        environment_from_dict({k: v for k, v in entry.items() if k != "kubernetes"}), request
    )
    placed.pop("name"), plain.pop("name")  # a fresh random suffix per launch
    assert placed == plain


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("alice", "alice"),
        ("Alice.B_2", "Alice.B_2"),  # a valid label value stays as it is
        ("1user", "1user"),
        ("", ""),
    ],
)
def test_server_selector_uses_kubespawners_label_values(name, expected):
    assert m.kubespawner_label(name) == expected


def test_server_selector_hashes_names_kubespawner_would_hash():
    """KubeSpawner 7's 'safe' scheme: slug of at most 21, '---', 8 hex digits of SHA-256."""
    import hashlib

    def tag(n):
        return hashlib.sha256(n.encode()).hexdigest()[:8]

    email = "Bob.Smith@example.org"
    assert m.kubespawner_label(email) == f"bob-smith-example-org---{tag(email)}"
    assert m.kubespawner_label("a--b") == f"a-b---{tag('a--b')}"  # '--' is always hashed
    assert m.kubespawner_label("_9lives!") == f"x-9lives---{tag('_9lives!')}"
    long = "x" * 70
    assert m.kubespawner_label(long) == f"{'x' * 21}---{tag(long)}"
    for value in (email, "a--b", "_9lives!", long, "名前"):
        out = m.kubespawner_label(value)
        assert len(out) <= 63 and LABEL_VALUE_RE.match(out)
    selector = m.default_server_selector(email, "gpu run")
    assert selector["hub.jupyter.org/username"] == m.kubespawner_label(email)
    assert selector["hub.jupyter.org/servername"] == f"gpu-run---{tag('gpu run')}"


# --- egress (issue 17, item 5) -----------------------------------------------------------------

EGRESS_ALLOW = [
    "10.20.0.5/32:5432",
    "169.254.20.10/32:53/UDP",
    "fd00:10::/64",
    {"to": [{"namespaceSelector": {"matchLabels": {"team": "data"}}}], "ports": [{"port": 9000}]},
]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_egress_policies_are_valid_strictly(version):
    """Every kernel's policy states its egress: none, or public addresses, DNS and what
    kubernetes_egress_allow lists; each form validates against the official schema."""
    for env in (env_of(), environment_from_dict(GPU_ENV)):
        policy = m.kernel_network_policy(start_of(env), egress_allow=EGRESS_ALLOW)
        assert "Egress" in policy["spec"]["policyTypes"]
        assert validate(policy, version) == version
    networked = m.kernel_network_policy(
        start_of(environment_from_dict(GPU_ENV)), egress_allow=EGRESS_ALLOW
    )
    extra = networked["spec"]["egress"][len(m.public_egress_rules()) :]
    assert extra[0] == {
        "to": [{"ipBlock": {"cidr": "10.20.0.5/32"}}],
        "ports": [{"protocol": "TCP", "port": 5432}],
    }
    assert extra[1]["ports"] == [{"protocol": "UDP", "port": 53}]
    assert extra[2] == {"to": [{"ipBlock": {"cidr": "fd00:10::/64"}}]}
    assert extra[3] == EGRESS_ALLOW[3]
    # network: none stays closed whatever the admin opened for networked environments.
    assert m.kernel_network_policy(start_of(), egress_allow=EGRESS_ALLOW)["spec"]["egress"] == []


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("10.20.0.5", "expected 'CIDR'"),
        ("10.20.0.5/33", "10.20.0.5/33"),
        ("10.20.0.1/8", "has host bits set"),
        ("10.0.0.0/8:99999", "bad port"),
        ({"to": [], "from": []}, "only 'to' and 'ports'"),
    ],
)
def test_bad_egress_allow_entries_are_refused(entry, words):
    with pytest.raises(m.KubernetesManifestError, match=re.escape(words)):
        m.egress_allow_rule(entry)
