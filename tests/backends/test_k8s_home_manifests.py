"""The notebook's folder in the kernel pod (issue 22 item 1), tier 1: offline.

The home claim's logic (jupyter_tfenv/backends/kubernetes/homes.py) as pure functions, and
the kernel pods it makes validated strictly against the 1.30 and 1.33 schemas
(affinity, volumes, subPath, securityContext) and the restricted Pod Security Standard.
The start against an API, with a real kernel reading and writing the claim's folder, is
tests/backends/test_k8s_home_backend.py.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import kubernetes_validate
import pytest

from jupyter_tfenv.backends.kubernetes import homes
from jupyter_tfenv.backends.kubernetes import manifests as m
from jupyter_tfenv.backends.kubernetes.pss import check_pod
from jupyter_tfenv.catalog.validation import environment_from_dict

K8S_VERSIONS = ("1.30", "1.33")
KEY = "f" * 64
SERVER_LABELS = {"component": "singleuser-server", "hub.jupyter.org/username": "alice"}


def start_of(home: homes.HomeMount | None, **env: Any) -> m.KernelStart:
    return m.KernelStart(
        env=environment_from_dict(
            {"id": "tf220", "image": "tensorflow/tensorflow:2.20.0-jupyter", **env}
        ),
        username="alice",
        uid=1000,
        gid=100,
        kernel_id="1b2c3d4e-0000-4000-8000-123456789abc",
        namespace="jhub",
        home=home,
    )


RWO_HOME = homes.HomeMount(
    claim="claim-alice",
    sub_path="work/project",
    mount_path="/home/jovyan/work/project",
    working_dir="/home/jovyan/work/project/sub",
    access=homes.RWO,
    server_labels=SERVER_LABELS,
    server_namespace="jhub",
)
RWX_HOME = homes.HomeMount(
    claim="claim-alice",
    sub_path="",
    mount_path="/home/jovyan",
    working_dir="/home/jovyan/work",
    access=homes.RWX,
)
PLACED = {
    "gpus": 1,
    "kubernetes": {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["gpu"]}]}
                    ]
                }
            }
        }
    },
}


def kernel(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod["spec"]["containers"]
    return container


# --- the pods ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(
    ("home", "env"), [(RWO_HOME, {}), (RWX_HOME, {}), (RWO_HOME, PLACED)], ids=["rwo", "rwx", "gpu"]
)
def test_a_pod_with_the_home_is_valid_strictly_and_restricted(home, env, version):
    pod = m.kernel_pod(start_of(home, **env))
    assert kubernetes_validate.validate(pod, version, strict=True) == version
    assert check_pod(pod) == []
    objects = m.kernel_objects(start_of(home, **env), KEY)
    for obj in objects.all():
        assert kubernetes_validate.validate(obj, version, strict=True) == version


def test_rwo_mounts_the_notebook_folder_beside_the_server():
    pod = m.kernel_pod(start_of(RWO_HOME))
    spec, box = pod["spec"], kernel(pod)
    assert box["workingDir"] == "/home/jovyan/work/project/sub"
    assert {
        "name": "home",
        "mountPath": "/home/jovyan/work/project",
        "subPath": "work/project",
    } in box["volumeMounts"]
    assert {"name": "home", "persistentVolumeClaim": {"claimName": "claim-alice"}} in spec[
        "volumes"
    ]
    # The server's uid/gid and fsGroup (z2jh's 1000:100).
    sec = spec["securityContext"]
    assert (sec["runAsUser"], sec["runAsGroup"], sec["fsGroup"]) == (1000, 100, 100)
    assert spec["affinity"] == {
        "podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": SERVER_LABELS},
                    "topologyKey": "kubernetes.io/hostname",
                    "namespaces": ["jhub"],
                }
            ]
        }
    }
    # The home is never in the init container (it prepares the checkpoint claim only).
    (prepare,) = spec["initContainers"]
    assert all(v["name"] != "home" for v in prepare["volumeMounts"])


def test_rwx_mounts_the_whole_home_on_any_node():
    pod = m.kernel_pod(start_of(RWX_HOME))
    box = kernel(pod)
    assert box["workingDir"] == "/home/jovyan/work"
    assert {"name": "home", "mountPath": "/home/jovyan"} in box["volumeMounts"]
    assert "affinity" not in pod["spec"]


def test_without_a_home_the_kernel_starts_in_tmp_as_before():
    pod = m.kernel_pod(start_of(None))
    assert kernel(pod)["workingDir"] == "/tmp"
    assert all(v["name"] != "home" for v in pod["spec"]["volumes"])


def test_the_pod_affinity_joins_the_catalogs_and_the_gpu_nodes():
    start = start_of(RWO_HOME, **PLACED)
    start = m.KernelStart(
        **{
            **start.__dict__,
            "node_terms": (
                {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["a100"]}]},
            ),
        }
    )
    affinity = m.kernel_pod(start)["spec"]["affinity"]
    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms and all(any(e["key"] == "gpu" for e in t["matchExpressions"]) for t in terms), (
        terms
    )
    (term,) = affinity["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["labelSelector"]["matchLabels"] == SERVER_LABELS


def test_the_pss_checker_still_catches_a_broken_pod_with_the_home():
    pod = m.kernel_pod(start_of(RWO_HOME))
    broken = copy.deepcopy(pod)
    broken["spec"]["volumes"].append({"name": "host", "hostPath": {"path": "/home"}})
    assert check_pod(broken)
    broken = copy.deepcopy(pod)
    broken["spec"]["securityContext"]["runAsUser"] = 0
    assert check_pod(broken)


# --- the folders --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cwd", "mount", "expected"),
    [
        # z2jh: the server's root_dir is the home: the whole home, run in the notebook's.
        ("/home/jovyan/work", "/home/jovyan", ("", "/home/jovyan", "/home/jovyan/work")),
        # mount_root = "cwd": the notebook's folder only.
        ("/home/jovyan/a/b", "/home/jovyan/a/b", ("a/b", "/home/jovyan/a/b", "/home/jovyan/a/b")),
        ("/home/jovyan/a/b", "/home/jovyan/a", ("a", "/home/jovyan/a", "/home/jovyan/a/b")),
        # A mount outside the home (or none): the notebook's folder.
        ("/home/jovyan/a", "/", ("a", "/home/jovyan/a", "/home/jovyan/a")),
        ("/home/jovyan/a", "", ("a", "/home/jovyan/a", "/home/jovyan/a")),
        ("/home/jovyan/a/", "/home/jovyan/./", ("", "/home/jovyan", "/home/jovyan/a")),
    ],
)
def test_the_folders_are_the_servers_relative_to_the_home(cwd, mount, expected):
    assert homes.home_folders("/home/jovyan", cwd, mount) == expected


@pytest.mark.parametrize(
    ("cwd", "words"),
    [
        ("/home/jovyan/../root", "outside the home /home/jovyan"),
        ("/home/jovyanx/a", "outside the home"),
        ("/etc", "outside the home"),
        ("work", "not an absolute path"),
    ],
)
def test_a_notebook_outside_the_home_is_refused_with_what_to_do(cwd, words):
    with pytest.raises(homes.HomeError) as err:
        homes.home_folders("/home/jovyan", cwd, cwd)
    assert words in err.value.message
    assert err.value.http_status == 409


def test_a_home_path_over_the_pods_own_folders_is_refused():
    with pytest.raises(homes.HomeError, match="kubernetes_home_path"):
        homes.home_folders("/", "/home/a", "/home/a")
    with pytest.raises(homes.HomeError, match="/tfenv/connection"):
        homes.home_folders("/tfenv", "/tfenv/x", "/tfenv")


# --- the claim's name and access ------------------------------------------------------------


def test_the_claim_name_is_spelled_as_the_servers_labels():
    safe = homes.HomeOptions()
    assert homes.home_claim_name(safe, "alice") == "claim-alice"
    escape = homes.HomeOptions(claim_template="claim-{username}{servername}", label_scheme="escape")
    assert homes.home_claim_name(escape, "bob.x", "gpu") == "claim-bob-2exgpu"
    # A name KubeSpawner hashes under 'safe' is refused unless accepted.
    with pytest.raises(homes.HomeError, match="32-bit hash"):
        homes.home_claim_name(safe, "Bob@example.org")
    # Upper case is a valid label but no claim name: said, with what to set.
    with pytest.raises(homes.HomeError, match="not a valid claim name"):
        homes.home_claim_name(safe, "Alice")
    with pytest.raises(homes.HomeError, match="only"):
        homes.home_claim_name(homes.HomeOptions(claim_template="claim-{user}"), "alice")


def claim(spec_modes: list[str], status_modes: list[str] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"spec": {"accessModes": spec_modes}}
    if status_modes is not None:
        obj["status"] = {"accessModes": status_modes}
    return obj


def test_access_modes_decide_how_the_claim_is_shared():
    assert homes.access_of(claim(["ReadWriteOnce"]), "c", "ns") == homes.RWO
    assert homes.access_of(claim(["ReadWriteMany"]), "c", "ns") == homes.RWX
    assert homes.access_of(claim(["ReadWriteOnce", "ReadWriteMany"]), "c", "ns") == homes.RWX
    # The bound volume's modes count first.
    assert homes.access_of(claim(["ReadWriteOnce"], ["ReadWriteMany"]), "c", "ns") == homes.RWX
    for modes in (["ReadWriteOncePod"], ["ReadOnlyMany"], []):
        with pytest.raises(homes.HomeError, match="cannot share it") as err:
            homes.access_of(claim(modes), "claim-alice", "jhub")
        assert "kubernetes_mount_home" in err.value.message


# --- resolve_home with scripted answers --------------------------------------------------------


def resolve(
    claim_obj: dict[str, Any] | None,
    servers: list[dict[str, Any]] | None,
    nodes: list[dict[str, Any]] | str = "unknown",
    *,
    gpus: int = 0,
    server_namespace: str = "jhub",
) -> homes.HomeMount:
    async def read_claim(name: str) -> dict[str, Any] | None:
        assert name == "claim-alice"
        return claim_obj

    async def server_pods(labels: Any) -> list[dict[str, Any]] | None:
        assert labels == SERVER_LABELS
        return servers

    async def list_nodes() -> list[dict[str, Any]] | str:
        return nodes

    return asyncio.run(
        homes.resolve_home(
            options=homes.HomeOptions(),
            username="alice",
            server_name="",
            cwd="/home/jovyan/work",
            mount="/home/jovyan",
            namespace="jhub",
            server_namespace=server_namespace,
            server_labels=SERVER_LABELS,
            read_claim=read_claim,
            server_pods=server_pods,
            nodes=list_nodes,
            gpus=gpus,
        )
    )


def server_on(node: str, phase: str = "Running") -> dict[str, Any]:
    return {"spec": {"nodeName": node}, "status": {"phase": phase}}


def node(name: str, gpus: int) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"allocatable": {"nvidia.com/gpu": str(gpus)}}}


def test_rwx_needs_no_server_pod():
    home = resolve(claim(["ReadWriteMany"]), None)
    assert home.server_labels is None and home.access == homes.RWX


def test_rwo_is_placed_beside_the_server_even_when_its_pod_cannot_be_read():
    home = resolve(claim(["ReadWriteOnce"]), None, gpus=1)
    assert home.server_labels == SERVER_LABELS and home.server_namespace == "jhub"


def test_a_missing_claim_says_which_and_the_namespace_rule():
    with pytest.raises(homes.HomeError) as err:
        resolve(None, None, server_namespace="hub-ns")
    text = err.value.message
    assert "jhub/claim-alice does not exist" in text
    assert "kubernetes_namespace = 'hub-ns'" in text and "kubernetes_home_claim" in text


def test_rwo_without_a_running_server_pod_names_the_labels():
    with pytest.raises(homes.HomeError) as err:
        resolve(claim(["ReadWriteOnce"]), [server_on("n1", "Pending")])
    assert "component=singleuser-server" in err.value.message
    assert "kubernetes_server_selector" in err.value.message


def test_a_gpu_kernel_whose_server_node_has_no_gpu_is_refused():
    with pytest.raises(homes.HomeError) as err:
        resolve(
            claim(["ReadWriteOnce"]),
            [server_on("cpu-1")],
            [node("cpu-1", 0), node("gpu-1", 4)],
            gpus=1,
        )
    assert "node cpu-1, which has 0" in err.value.message
    assert "ReadWriteMany" in err.value.message
    # On a GPU node it goes, beside the server; with RWX any node.
    assert resolve(claim(["ReadWriteOnce"]), [server_on("gpu-1")], [node("gpu-1", 4)], gpus=1)
    assert resolve(claim(["ReadWriteMany"]), [server_on("cpu-1")], [node("cpu-1", 0)], gpus=1)


def test_the_scheduling_message_explains_the_affinity():
    failed = "No node can run the kernel of 'tf220' now: 0/3 nodes are available"
    assert homes.scheduling_message(failed, RWO_HOME).endswith(homes.RWO_SCHEDULING_HINT)
    assert homes.scheduling_message(failed, RWX_HOME) == failed
    assert homes.scheduling_message("image pull failed", RWO_HOME) == "image pull failed"


def test_a_claim_annotated_for_another_user_is_never_mounted():
    theirs = {
        **claim(["ReadWriteMany"]),
        "metadata": {"annotations": {"hub.jupyter.org/username": "alic"}},
    }
    with pytest.raises(homes.HomeError, match="not 'alice'"):
        resolve(theirs, None)
    mine = {
        **claim(["ReadWriteMany"]),
        "metadata": {"annotations": {"hub.jupyter.org/username": "alice"}},
    }
    assert resolve(mine, None).claim == "claim-alice"
