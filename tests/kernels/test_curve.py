"""CurveZMQ for kernel pods (issue 22 item 5): the pure parts. The broker's policy
(:func:`curve.decide`), the start request's keys, the probe's verdict on an image, and
the encrypted kernel's objects (Secret with the keys and the launcher, the pod's command,
the annotation): strictly valid for Kubernetes 1.30 and 1.33 and restricted. The end to
end proof (a client without the key is not answered) is tests/broker/test_k8s_encryption.py.
"""

from __future__ import annotations

import base64
import json

import kubernetes_validate
import pytest
import zmq

from jupyter_tfenv.backends.kubernetes import manifests as m
from jupyter_tfenv.backends.kubernetes.pss import check_pod
from jupyter_tfenv.catalog.validation import environment_from_dict
from jupyter_tfenv.kernels import curve

KEYS = curve.new_keys()
IMAGE = "tensorflow/tensorflow:2.20.0-jupyter"


def start_of(keys: curve.CurveKeys | None) -> m.KernelStart:
    return m.KernelStart(
        env=environment_from_dict({"id": "tf220", "image": IMAGE}),
        username="alice",
        uid=1000,
        gid=100,
        kernel_id="1b2c3d4e-0000-4000-8000-123456789abc",
        namespace="tfenv-kernels",
        curve=keys,
    )


def test_prefer_encrypts_where_both_sides_can():
    decision = curve.decide("prefer", KEYS, image=IMAGE)
    assert decision.keys == KEYS and decision.encryption == "curve" and not decision.warning


def test_require_encrypts_where_both_sides_can():
    assert curve.decide("require", KEYS, image=IMAGE).encryption == "curve"


def test_off_never_encrypts_and_never_warns():
    decision = curve.decide("off", KEYS, image=IMAGE)
    assert decision.keys is None and decision.warning == ""


def test_prefer_without_the_servers_keys_runs_in_clear_and_says_why():
    decision = curve.decide("prefer", None, image=IMAGE, server_reason="jupyter_client 8.6")
    assert decision.encryption == "none"
    assert "NOT encrypted" in decision.warning and "jupyter_client 8.6" in decision.warning


def test_require_without_the_servers_keys_refuses_with_what_to_do():
    with pytest.raises(curve.EncryptionRefused) as info:
        curve.decide("require", None, image=IMAGE)
    assert info.value.http_status == 409
    text = info.value.message
    assert "cannot be encrypted" in text and "jupyter_client 8.10" in text and "'prefer'" in text


def test_an_image_whose_pyzmq_lacks_curve_follows_the_policy():
    probe = {"zmq": {"pyzmq": "19.0.2", "libzmq": "4.3.2", "curve": False}}
    lacks = curve.image_support(probe)
    assert lacks is not None and "19.0.2" in lacks
    prefer = curve.decide("prefer", KEYS, image=IMAGE, image_support=lacks)
    assert prefer.keys is None and IMAGE in prefer.warning
    with pytest.raises(curve.EncryptionRefused) as info:
        curve.decide("require", KEYS, image=IMAGE, image_support=lacks)
    assert IMAGE in info.value.message and "pyzmq 19.0.2" in info.value.message


@pytest.mark.parametrize(
    "probe", [None, {}, {"zmq": None}, {"zmq": {"pyzmq": "27.3.0", "curve": True}}]
)
def test_images_not_known_to_lack_curve_are_tried(probe):
    assert curve.image_support(probe) is None


def test_an_unknown_policy_is_an_error():
    with pytest.raises(ValueError, match="kubernetes_kernel_encryption"):
        curve.decide("always", KEYS, image=IMAGE)


def test_request_keys_are_checked():
    assert curve.keys_from_request(None) is None
    assert curve.keys_from_request(KEYS.as_request()) == KEYS
    other = curve.new_keys()
    bad = [
        "not an object",
        {"public_key": KEYS.public},
        {**KEYS.as_request(), "extra": 1},
        {"public_key": "short", "secret_key": KEYS.secret},
        {"public_key": other.public, "secret_key": KEYS.secret},  # not one pair
    ]
    for value in bad:
        with pytest.raises(ValueError, match="curve"):
            curve.keys_from_request(value)


def test_connection_keys_round_trip():
    conn = {"key": "x", **KEYS.connection_fields()}
    assert curve.keys_from_connection(conn) == KEYS
    assert curve.keys_from_connection({"key": "x"}) is None


def test_this_server_can_encrypt():
    """The project's own venv: jupyter_client 8.10 and a pyzmq with CurveZMQ."""
    assert zmq.has("curve")
    assert curve.server_support() is None
    assert curve.offer() is not None


def secret_files(secret: dict) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


@pytest.mark.parametrize("version", ["1.30", "1.33"])
def test_an_encrypted_kernels_objects_are_valid_and_keep_the_keys_in_the_secret(version):
    objs = m.kernel_objects(start_of(KEYS), "k" * 32, server_selector={"app": "x"})
    for obj in objs.all():
        kubernetes_validate.validate(obj, version, strict=True)
    assert check_pod(objs.pod) == []
    files = secret_files(objs.secret)
    conn = json.loads(files[m.CONNECTION_FILE])
    assert (conn["curve_publickey"], conn["curve_secretkey"]) == (KEYS.public, KEYS.secret)
    assert files[curve.LAUNCHER_FILE] == curve.launcher_source()
    pod = json.dumps(objs.pod)
    assert KEYS.secret not in pod and KEYS.public not in pod
    [kernel] = objs.pod["spec"]["containers"]
    assert kernel["command"][1] == f"{m.CONNECTION_DIR}/{curve.LAUNCHER_FILE}"
    [volume] = [v for v in objs.pod["spec"]["volumes"] if v["name"] == "connection"]
    assert {i["key"] for i in volume["secret"]["items"]} == {m.CONNECTION_FILE, "tfenv_curve.py"}
    assert objs.pod["metadata"]["annotations"][m.ENCRYPTION_ANNOTATION] == "curve"


def test_a_kernel_in_clear_keeps_its_objects_as_before():
    objs = m.kernel_objects(start_of(None), "k" * 32, server_selector={"app": "x"})
    assert set(secret_files(objs.secret)) == {m.CONNECTION_FILE}
    assert "curve_secretkey" not in secret_files(objs.secret)[m.CONNECTION_FILE]
    assert objs.pod["spec"]["containers"][0]["command"][1:3] == ["-m", "ipykernel_launcher"]
    assert m.ENCRYPTION_ANNOTATION not in objs.pod["metadata"]["annotations"]


def test_the_launcher_is_python_3_6_syntax():
    """It runs in images we do not control: no syntax newer than the oldest Python."""
    import ast

    tree = ast.parse(curve.launcher_source(), feature_version=(3, 6))
    assert tree.body


@pytest.mark.docker
def test_the_launcher_says_what_an_image_without_pyzmq_lacks(images, tmp_path):
    """A real image without pyzmq (tfenv-test/python:3.11): the launcher exits 3 with the
    TFENV-NO-CURVE line and what to do, rather than a traceback or a kernel in clear."""
    import docker

    from tests.conftest import PY_NO_KERNEL_IMAGE

    folder = tmp_path / "connection"
    folder.mkdir()
    start = start_of(KEYS)
    (folder / m.CONNECTION_FILE).write_text(json.dumps(m.connection_info(start, "k" * 32)))
    (folder / curve.LAUNCHER_FILE).write_text(curve.launcher_source())
    folder.chmod(0o755)
    for f in folder.iterdir():
        f.chmod(0o644)
    with pytest.raises(docker.errors.ContainerError) as info:
        images.containers.run(
            PY_NO_KERNEL_IMAGE,
            ["python3", f"{m.CONNECTION_DIR}/{curve.LAUNCHER_FILE}", "-f", m.CONNECTION_PATH],
            volumes=[f"{folder}:{m.CONNECTION_DIR}:ro"],
            network_mode="none",
            user="1000:100",
            remove=True,
            stderr=True,
            labels={"org.jupyter.tfenv.test": "test-curve-launcher"},
        )
    assert info.value.exit_status == 3
    stderr = info.value.stderr.decode()
    assert curve.NO_CURVE_MARK in stderr and "pyzmq=missing" in stderr, stderr
    assert "kubernetes_kernel_encryption='off'" in stderr, stderr
