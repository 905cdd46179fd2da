"""Kubernetes kernels (issue 11): the deployment examples in examples/kubernetes/, offline.

No cluster is involved and the network is blocked. Every object of every
``examples/kubernetes/*.yaml`` is validated strictly (unknown fields are errors) against
the official Kubernetes schemas bundled by ``kubernetes-validate``, for the versions
tests/backends/test_k8s_manifests.py uses; every pod template passes the restricted Pod Security
Standard checker (jupyter_tfenv.backends.kubernetes.pss); the RBAC is the broker's Role in
the kernels'
namespace only, with exactly the verbs it needs; the broker's config is Python that sets
traits the broker has; the catalog loads with the product's loader and every entry can
be built into a kernel pod; the pre-puller pulls exactly the catalog's images; and the
zero-to-jupyterhub values file agrees with the broker's Service, token, scope and the
kernels' ports. The values file is checked against the z2jh chart's own schema only when
a local copy of the chart is named by $TFENV_Z2JH_CHART (none is shipped: it is the
chart's code). What a real cluster does with these objects is not tested here
(docs/kubernetes.md, "How it is tested").
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from traitlets.config import Config

from jupyter_tfenv.backends.kubernetes import manifests as m
from jupyter_tfenv.backends.kubernetes.pss import check_pod
from jupyter_tfenv.broker.app import TFEnvBroker
from jupyter_tfenv.catalog.loading import TFEnvCatalog
from jupyter_tfenv.catalog.model import Environment
from tests.backends.test_k8s_manifests import K8S_VERSIONS, block_network

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "kubernetes"
FILES = (
    "namespace.yaml",
    "broker-rbac.yaml",
    "broker.yaml",
    "kernels-networkpolicy.yaml",
    "prepull-daemonset.yaml",
)
VALUES_FILE = "z2jh-values.yaml"
SERVICE = "tfenv-broker"
SCOPE = f"access:services!service={SERVICE}"
KERNEL_PORTS = set(m.KernelPorts().by_name().values())
#: What the broker may do in the kernels' namespace, and nothing more.
EXPECTED_RULES = {
    ("", "pods"): {"create", "get", "list", "watch", "delete", "patch"},
    ("", "pods/log"): {"get"},
    ("", "secrets"): {"create", "get", "list", "delete", "patch"},
    ("", "persistentvolumeclaims"): {"create", "get", "list"},
    ("networking.k8s.io", "networkpolicies"): {"create", "get", "list", "delete", "patch"},
    ("", "events"): {"get", "list", "watch"},
    ("metrics.k8s.io", "pods"): {"get"},
}
#: The broker traits the example config sets (the Kubernetes backend's included).
BROKER_TRAITS = {
    "backend",
    "ip",
    "port",
    "kubernetes_namespace",
    "kubernetes_storage_class",
    "kubernetes_storage_size",
    "kubernetes_storage_access_modes",
    "kubernetes_uid",
    "kubernetes_gid",
    "kubernetes_pull_timeout",
}
#: z2jh's label for users' server pods (KubeSpawner's component label).
SERVER_POD_LABELS = {"component": "singleuser-server", "hub.jupyter.org/username": "alice"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Everything here works offline: any connection or name lookup fails the test."""
    block_network(monkeypatch)


# --- loading ---------------------------------------------------------------------------


def load(name: str) -> list[dict[str, Any]]:
    with open(EXAMPLES / name, encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def all_objects() -> list[tuple[str, dict[str, Any]]]:
    return [(name, obj) for name in FILES for obj in load(name)]


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        obj
        for _, obj in all_objects()
        if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def values() -> dict[str, Any]:
    docs = load(VALUES_FILE)
    assert len(docs) == 1
    return docs[0]


def broker_config() -> Config:
    """broker_config.py from the ConfigMap, run as traitlets runs a config file."""
    source = one("ConfigMap", "tfenv-broker-config")["data"]["broker_config.py"]
    config = Config()
    code = compile(source, "broker_config.py", "exec")
    exec(code, {"get_config": lambda: config, "c": config})
    return config


def catalog_environments(tmp_path: Path) -> list[Environment]:
    data = one("ConfigMap", "tfenv-catalog")["data"]
    assert set(data) == {"tfenv-catalog.yaml"}
    path = tmp_path / "tfenv-catalog.yaml"
    path.write_text(data["tfenv-catalog.yaml"], encoding="utf-8")
    catalog = TFEnvCatalog(catalog_files=[str(path)])
    assert catalog.problems() == []
    envs = catalog.all()
    assert envs
    return envs


def deployment() -> dict[str, Any]:
    return one("Deployment", SERVICE)


def daemonset() -> dict[str, Any]:
    return one("DaemonSet", "tfenv-prepull")


def broker_container() -> dict[str, Any]:
    containers = deployment()["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(container: Mapping[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def as_pod(workload: Mapping[str, Any]) -> dict[str, Any]:
    """A workload's pod template as the Pod its controller would create."""
    template = workload["spec"]["template"]
    meta = {**template.get("metadata", {}), "name": f"{workload['metadata']['name']}-x"}
    meta["namespace"] = workload["metadata"]["namespace"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]}


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A label selector (matchLabels, matchExpressions) against a set of labels."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, vals = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in vals:
            return False
        if op == "NotIn" and labels.get(key) in vals:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def namespace_labels(name: str) -> dict[str, str]:
    """A namespace's labels as the API server sets them (kubernetes.io/metadata.name)."""
    labels = {"kubernetes.io/metadata.name": name}
    for obj in load("namespace.yaml"):
        if obj["metadata"]["name"] == name:
            labels.update(obj["metadata"].get("labels", {}))
    return labels


def port_numbers(rule: Mapping[str, Any], protocol: str = "TCP") -> set[int]:
    out: set[int] = set()
    for port in rule.get("ports", []):
        if port.get("protocol", "TCP") != protocol:
            continue
        first = port["port"]
        assert isinstance(first, int), f"named port {first!r}: use numbers here"
        out.update(range(first, port.get("endPort", first) + 1))
    return out


def peer_reaches(
    peer: Mapping[str, Any], source_ns: str, target_ns: str, labels: Mapping[str, str]
) -> bool:
    """Whether one NetworkPolicy peer (from/to entry) covers a pod ``labels`` in ``target_ns``."""
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], namespace_labels(target_ns)):
            return False
    elif target_ns != source_ns:
        return False
    return "podSelector" not in peer or selects(peer["podSelector"], labels)


def sample_kernel_pod(env: Environment, config: Config) -> dict[str, Any]:
    b = config.TFEnvBroker
    start = m.KernelStart(
        env=env,
        username="alice",
        uid=b.kubernetes_uid,
        gid=b.kubernetes_gid,
        kernel_id="1b2c3d4e-0000-4000-8000-123456789abc",
        namespace=b.kubernetes_namespace,
        storage=m.StorageOptions(
            storage_class=b.kubernetes_storage_class or None,
            size=b.kubernetes_storage_size,
            access_modes=tuple(b.kubernetes_storage_access_modes),
        ),
    )
    return m.kernel_pod(start)


# --- every object: strict schemas, and nothing cluster-wide -------------------------------


def test_files_are_all_covered():
    """No example file escapes these tests."""
    assert {p.name for p in EXAMPLES.glob("*.yaml")} == {*FILES, VALUES_FILE}


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", FILES)
def test_objects_validate_strictly(name, version):
    objects = load(name)
    assert objects, name
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_pod_templates_validate_as_pods(version):
    for workload in (deployment(), daemonset()):
        kubernetes_validate.validate(as_pod(workload), version, strict=True)


def test_every_object_names_its_namespace():
    """Nothing lands in whatever namespace kubectl happens to point at."""
    for name, obj in all_objects():
        if obj["kind"] == "Namespace":
            continue
        assert obj["metadata"].get("namespace"), f"{name}: {obj['kind']} {obj['metadata']}"


def test_nothing_cluster_wide():
    kinds = {obj["kind"] for _, obj in all_objects()}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}, kinds
    assert kinds <= {
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Deployment",
        "Service",
        "NetworkPolicy",
        "DaemonSet",
    }, kinds


# --- pods: the restricted Pod Security Standard ------------------------------------------


@pytest.mark.parametrize("kind", ["Deployment", "DaemonSet"])
def test_pod_templates_pass_restricted_pss(kind):
    workloads = [obj for _, obj in all_objects() if obj["kind"] == kind]
    assert workloads
    for workload in workloads:
        assert check_pod(as_pod(workload)) == [], workload["metadata"]["name"]


def test_pod_templates_hold_no_needless_token_and_stay_small():
    for workload in (deployment(), daemonset()):
        spec = workload["spec"]["template"]["spec"]
        containers = [*spec.get("initContainers", []), *spec["containers"]]
        for container in containers:
            res = container["resources"]
            assert set(res) == {"requests", "limits"}, container["name"]
            assert set(res["limits"]) == {"cpu", "memory"}, container["name"]
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert ":latest" not in container["image"] and ":" in container["image"]
        assert spec["enableServiceLinks"] is False
    assert daemonset()["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_kernels_namespace_enforces_restricted():
    config = broker_config()
    ns = one("Namespace")
    assert ns["metadata"]["name"] == config.TFEnvBroker.kubernetes_namespace
    labels = ns["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    # The pre-puller runs there, under the same rules as the kernels.
    assert daemonset()["metadata"]["namespace"] == ns["metadata"]["name"]


# --- RBAC ----------------------------------------------------------------------------------


def test_broker_role_is_the_kernels_namespace_only_with_exact_verbs():
    kernels_ns = broker_config().TFEnvBroker.kubernetes_namespace
    roles = [obj for _, obj in all_objects() if obj["kind"] == "Role"]
    assert len(roles) == 1
    role = roles[0]
    assert role["metadata"]["namespace"] == kernels_ns
    got: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no resourceNames…
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert "*" not in (group, resource)
                assert "*" not in rule["verbs"]
                got.setdefault((group, resource), set()).update(rule["verbs"])
    assert got == EXPECTED_RULES


def test_role_binding_gives_the_role_to_the_brokers_service_account_only():
    config = broker_config()
    role = one("Role")
    binding = one("RoleBinding")
    account = one("ServiceAccount")
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]
    spec = deployment()["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    assert deployment()["metadata"]["namespace"] == account["metadata"]["namespace"]
    # The broker's own namespace is not the kernels' (its Role does not reach it).
    assert account["metadata"]["namespace"] != config.TFEnvBroker.kubernetes_namespace


# --- the broker: config, catalog, Deployment, Service, NetworkPolicy ------------------------


def test_broker_config_sets_kubernetes_backend():
    config = broker_config()
    b = config.TFEnvBroker
    assert b.backend == "kubernetes"
    assert b.ip == "0.0.0.0"
    assert b.port == 8765
    assert b.kubernetes_namespace == "tfenv-kernels"
    assert b.kubernetes_storage_access_modes == ["ReadWriteOnce"]
    assert b.kubernetes_pull_timeout == 1800


def test_broker_config_names_are_broker_traits():
    """Every c.TFEnvBroker.X the example sets is a trait of the broker (a typo or a
    missing trait would be ignored by traitlets with a warning only)."""
    config = broker_config()
    assert set(config) == {"TFEnvBroker", "TFEnvCatalog"}
    assert set(config.TFEnvBroker) >= BROKER_TRAITS
    missing = sorted(set(config.TFEnvBroker) - set(TFEnvBroker.class_trait_names()))
    assert missing == [], f"not traits of TFEnvBroker: {missing}"
    missing = sorted(set(config.TFEnvCatalog) - set(TFEnvCatalog.class_trait_names()))
    assert missing == [], f"not traits of TFEnvCatalog: {missing}"
    # The values have the traits' types (traitlets raises on a wrong one).
    broker = TFEnvBroker(config=config)
    for name, value in config.TFEnvBroker.items():
        assert getattr(broker, name) == value, name


def test_broker_command_and_config_files_are_mounted():
    container = broker_container()
    assert container["command"] == [
        "python",
        "-m",
        "jupyter_tfenv.broker",
        "--TFEnvBroker.config_file=/etc/tfenv/broker_config.py",
    ]
    mounts = {vm["name"]: vm for vm in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment()["spec"]["template"]["spec"]["volumes"]}
    files: dict[str, tuple[str, str]] = {}
    for name, mount in mounts.items():
        assert mount.get("readOnly") or "emptyDir" in volumes[name], name
        for source in volumes[name].get("projected", {}).get("sources", []):
            for item in source["configMap"]["items"]:
                path = f"{mount['mountPath']}/{item['path']}"
                files[path] = (source["configMap"]["name"], item["key"])
    catalog_path = broker_config().TFEnvCatalog.catalog_files
    assert files == {
        "/etc/tfenv/broker_config.py": ("tfenv-broker-config", "broker_config.py"),
        catalog_path[0]: ("tfenv-catalog", "tfenv-catalog.yaml"),
    }
    assert len(catalog_path) == 1
    assert env_of(container)["JUPYTER_TFENV_CATALOG"] == catalog_path[0]


def test_catalog_loads_pinned_and_every_entry_makes_a_valid_kernel_pod(tmp_path):
    config = broker_config()
    envs = catalog_environments(tmp_path)
    for env in envs:
        ref = env.image_ref
        assert ref.digest or (ref.tag and ref.tag != "latest"), env.image
        assert not env.mounts, env.id  # not expressible as a restricted pod
        pod = sample_kernel_pod(env, config)  # refuses gpus: all, device ids, mounts
        assert check_pod(pod) == [], env.id
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(pod, version, strict=True)
    assert any(env.wants_gpu for env in envs)
    assert set(config.TFEnvBroker.environment_groups) <= {env.id for env in envs}


def test_broker_hub_token_and_identity():
    env = env_of(broker_container())
    service_key = next(iter(values()["hub"]["services"]))
    assert env["JUPYTERHUB_SERVICE_NAME"] == service_key == SERVICE
    assert env["JUPYTERHUB_SERVICE_PREFIX"] == f"/services/{SERVICE}/"
    # The token z2jh generates for hub.services.<key> and keeps in its Secret `hub`.
    assert env["JUPYTERHUB_API_TOKEN"] == {
        "secretKeyRef": {"name": "hub", "key": f"hub.services.{service_key}.apiToken"}
    }
    hub_ns = deployment()["metadata"]["namespace"]
    assert env["JUPYTERHUB_API_URL"] == f"http://hub.{hub_ns}.svc:8081/hub/api"
    spec = deployment()["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    assert spec["template"]["spec"]["automountServiceAccountToken"] is True


def test_broker_service_and_probes():
    config = broker_config()
    service = one("Service", SERVICE)
    pod_labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels)
    assert selects(deployment()["spec"]["selector"], pod_labels)
    container = broker_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    (port,) = service["spec"]["ports"]
    assert port["port"] == config.TFEnvBroker.port == ports[port["targetPort"]]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert ports[container[probe]["tcpSocket"]["port"]] == config.TFEnvBroker.port


def test_broker_network_policy():
    policy = one("NetworkPolicy", SERVICE)
    hub_ns = policy["metadata"]["namespace"]
    assert hub_ns == deployment()["metadata"]["namespace"]
    pod_labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert selects(policy["spec"]["podSelector"], pod_labels)
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    # z2jh's hub NetworkPolicy admits only pods with this label.
    assert pod_labels["hub.jupyter.org/network-access-hub"] == "true"

    def ingress_from(labels):
        return any(
            8765 in port_numbers(rule)
            and any(peer_reaches(p, hub_ns, hub_ns, labels) for p in rule["from"])
            for rule in policy["spec"]["ingress"]
        )

    assert ingress_from(SERVER_POD_LABELS)
    assert ingress_from({"component": "hub"})
    assert not ingress_from({"component": "something-else"})
    assert all(port_numbers(rule) == {8765} for rule in policy["spec"]["ingress"])

    egress = policy["spec"]["egress"]
    to_hub = [
        r
        for r in egress
        if 8081 in port_numbers(r)
        and any(peer_reaches(p, hub_ns, hub_ns, {"component": "hub"}) for p in r.get("to", []))
    ]
    assert to_hub
    assert any(53 in port_numbers(r, "UDP") for r in egress)
    assert any({443, 6443} <= port_numbers(r) for r in egress)  # the API server


# --- the kernels' default deny, the pre-puller ----------------------------------------------


def test_kernels_default_deny_is_the_products():
    ns = broker_config().TFEnvBroker.kubernetes_namespace
    (policy,) = load("kernels-networkpolicy.yaml")
    assert policy == m.default_deny_policy(ns)


def test_prepull_pulls_exactly_the_catalogs_images(tmp_path):
    envs = catalog_environments(tmp_path)
    spec = daemonset()["spec"]["template"]["spec"]
    inits = spec["initContainers"]
    assert sorted(c["image"] for c in inits) == sorted(env.image for env in envs)
    for container in inits:
        # TF images have python; none is guaranteed a /bin/true.
        assert container["command"] == ["python", "-c", "pass"]
        assert "args" not in container
        assert container["imagePullPolicy"] == "IfNotPresent"
        assert not any(m.GPU_RESOURCE in r for r in container["resources"].values())
    (pause,) = spec["containers"]
    assert pause["image"].startswith("registry.k8s.io/pause:")


def test_prepull_lands_where_the_gpu_environments_do(tmp_path):
    envs = [env for env in catalog_environments(tmp_path) if env.wants_gpu]
    assert envs
    spec = daemonset()["spec"]["template"]["spec"]
    for env in envs:
        placement = m.placement(env)
        assert spec["nodeSelector"] == placement["nodeSelector"], env.id
        assert spec["tolerations"] == placement["tolerations"], env.id


def test_prepull_pods_are_not_kernels():
    """The broker finds (and may remove) its objects by these labels: not the pre-puller."""
    pod = as_pod(daemonset())
    labels = pod["metadata"]["labels"]
    assert (
        labels.get("app.kubernetes.io/managed-by") != m.MANAGED_BY["app.kubernetes.io/managed-by"]
    )
    deny = m.default_deny_policy(daemonset()["metadata"]["namespace"])
    assert not selects(deny["spec"]["podSelector"], labels)


# --- the zero-to-jupyterhub values --------------------------------------------------------


def test_values_register_the_broker_service_at_its_service_url():
    service = one("Service", SERVICE)
    url = (
        f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc:"
        f"{service['spec']['ports'][0]['port']}"
    )
    hub = values()["hub"]
    assert set(hub["services"]) == {SERVICE}
    entry = hub["services"][SERVICE]
    assert entry["url"] == url
    # The chart generates the token (the broker reads it from the Secret `hub`).
    assert "api_token" not in entry and "apiToken" not in entry
    assert "admin" not in entry
    assert values()["singleuser"]["extraEnv"]["JUPYTER_TFENV_BROKER_URL"] == url


def test_values_grant_users_and_their_servers_the_broker_scope():
    hub = values()["hub"]
    assert SCOPE in hub["loadRoles"]["user"]["scopes"]
    assert "self" in hub["loadRoles"]["user"]["scopes"]  # the default role's, kept
    config = Config()
    for source in hub["extraConfig"].values():
        code = compile(source, "extraConfig", "exec")
        exec(code, {"c": config, "get_config": lambda: config})
    assert SCOPE in config.KubeSpawner.server_token_scopes
    assert set(config.JupyterHub.custom_scopes) == {
        "custom:tfenv:read",
        "custom:tfenv:write",
        "custom:tfenv:execute",
    }
    assert (
        "--ServerApp.authorizer_class=jupyter_tfenv.server.hub.TFEnvHubAuthorizer"
        in config.KubeSpawner.args
    )


def test_values_singleuser_servers(tmp_path):
    config = broker_config()
    single = values()["singleuser"]
    # No ServiceAccount: KubeSpawner then mounts no token (no cluster credentials).
    assert single.get("serviceAccountName") is None
    assert "automountServiceAccountToken" not in str(single.get("extraPodConfig", {}))
    assert single["uid"] == config.TFEnvBroker.kubernetes_uid
    assert single["fsGid"] == config.TFEnvBroker.kubernetes_gid
    image = single["image"]
    assert image["name"] == "registry.example.org/jupyter-tfenv-singleuser"
    assert image["tag"] == "0.1.0"
    # The catalog ConfigMap, at the path JUPYTER_TFENV_CATALOG names (the broker's too).
    storage = single["storage"]
    (volume,) = [v for v in storage["extraVolumes"] if v.get("configMap")]
    assert volume["configMap"]["name"] == "tfenv-catalog"
    (mount,) = [vm for vm in storage["extraVolumeMounts"] if vm["name"] == volume["name"]]
    assert mount["readOnly"] is True
    catalog = single["extraEnv"]["JUPYTER_TFENV_CATALOG"]
    assert catalog == f"{mount['mountPath']}/tfenv-catalog.yaml"
    assert catalog == config.TFEnvCatalog.catalog_files[0]


def test_values_egress_reaches_kernel_ports_and_the_broker(tmp_path):
    config = broker_config()
    hub_ns = deployment()["metadata"]["namespace"]
    kernels_ns = config.TFEnvBroker.kubernetes_namespace
    policy = values()["singleuser"]["networkPolicy"]
    assert policy["enabled"] is True
    egress = policy["egress"]
    # The labels of a real kernel pod, as the product builds it.
    kernel_labels = sample_kernel_pod(catalog_environments(tmp_path)[0], config)["metadata"][
        "labels"
    ]

    def ports_to(ns, labels):
        found: set[int] = set()
        for rule in egress:
            if any(peer_reaches(p, hub_ns, ns, labels) for p in rule.get("to", [])):
                found |= port_numbers(rule)
        return found

    assert ports_to(kernels_ns, kernel_labels) == KERNEL_PORTS == set(range(52000, 52005))
    broker_labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert ports_to(hub_ns, broker_labels) == {8765}
    # Not every pod of the kernels' namespace (the pre-puller, say) nor other namespaces.
    assert ports_to(kernels_ns, as_pod(daemonset())["metadata"]["labels"]) == set()
    assert ports_to("default", kernel_labels) == set()


def test_values_against_the_chart_schema():
    """With $TFENV_Z2JH_CHART naming a local copy of z2jh's chart folder (values.yaml and
    values.schema.yaml), the values merged over the chart's defaults are valid, as
    `helm upgrade` checks them. Nothing of the chart is shipped here."""
    chart = os.environ.get("TFENV_Z2JH_CHART")
    if not chart:
        pytest.skip("set TFENV_Z2JH_CHART to a local z2jh chart folder to check its schema")
    import jsonschema

    with open(Path(chart) / "values.schema.yaml", encoding="utf-8") as f:
        schema = yaml.safe_load(f)
    with open(Path(chart) / "values.yaml", encoding="utf-8") as f:
        defaults = yaml.safe_load(f)

    def merge(base: Any, over: Any) -> Any:
        if isinstance(base, dict) and isinstance(over, dict):
            return {**base, **{k: merge(base.get(k), v) for k, v in over.items()}}
        return over

    merged = merge(defaults, values())
    errors = [
        f"{'.'.join(map(str, e.path))}: {e.message[:200]}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(merged)
    ]
    assert errors == []
