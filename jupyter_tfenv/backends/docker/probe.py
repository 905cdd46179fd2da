"""Know your environment: what Python, TensorFlow and GPUs an environment's image really has.

:func:`probe_image` runs ``container/probe.py`` (standard library only) with the image's
own interpreter in a throwaway container, hardened like a kernel container, and returns
the JSON it prints plus where and when it ran. It never runs in a user's kernel:
importing TensorFlow there would take GPU memory the user wants for training.

The result depends only on the image's bits and the GPU request, so it is cached by
image id and GPU request (``<cache_dir>/<image-id-hex>-<gpukey>.json``): an image that
is re-pulled under the same tag gets a new id, hence a fresh probe. GPU visibility also
depends on the host (driver, NVIDIA Container Toolkit); ``refresh=True`` re-probes after
the host changed.

Everything here is blocking (docker SDK calls); async callers run it in a thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound
from docker.types import Mount
from jupyter_core.paths import jupyter_data_dir

from jupyter_tfenv.backends.docker.engine import (
    explain_api_error,
    explain_missing_python,
    gpu_device_requests,
    hardening,
    image_missing_message,
    remove_quietly,
    safe_name,
    server_labels,
    tail_logs,
)
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.core.labels import (
    LABEL_ENVIRONMENT,
    LABEL_IMAGE_ID,
    LABEL_IMAGE_REF,
    LABEL_PROBE,
)
from jupyter_tfenv.core.paths import CONTAINER_PROBE
from jupyter_tfenv.errors import ENGINE_HINT, TFEnvError
from jupyter_tfenv.kernels.probe_output import (
    PROBE_SCRIPT_PATH,
    PROBE_VERSION,
    no_result_message,
    probe_facts,
    probe_result,
)

PROBE_MEMORY = 4 * 1024**3
PROBE_PIDS = 1024
#: States of ``gpu_state``.
GPU_NOT_REQUESTED = "not_requested"
GPU_OK = "ok"
GPU_NO_RUNTIME = "no_runtime"
GPU_NOT_VISIBLE = "not_visible"
GPU_UNKNOWN = "unknown"


class ProbeError(TFEnvError):
    """The environment's image could not be probed; the message says why and what to do.

    ``logs`` holds the probe container's last lines, if any; ``http_status`` is 400 when
    the catalog entry or the engine's images must change, 504 for a timeout.
    """

    http_status = 500

    def __init__(self, message: str, *, logs: str = "", http_status: int | None = None) -> None:
        full = message
        if logs.strip():
            full = f"{message}\n\nLast lines of the probe container's log:\n{logs.rstrip()}"
        super().__init__(full)
        self.logs = logs
        if http_status is not None:
            self.http_status = http_status


def probe_cache_dir() -> Path:
    """Where probe results are cached by default: ``<jupyter data dir>/jupyter_tfenv/probes``."""
    return Path(jupyter_data_dir()) / "jupyter_tfenv" / "probes"


def gpu_key(env: Environment) -> str:
    """``cpu`` for CPU environments, else a short hash of the GPU request."""
    if not env.wants_gpu:
        return "cpu"
    request = list(env.gpus) if isinstance(env.gpus, tuple) else env.gpus
    digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
    return f"gpu-{digest[:12]}"


def _image_hex(image_id: str) -> str:
    return image_id.split(":", 1)[-1]


def probe_cache_path(cache_dir: Path, image_id: str, env: Environment) -> Path:
    return Path(cache_dir) / f"{_image_hex(image_id)}-{gpu_key(env)}.json"


def cached_probe(
    image: docker.DockerClient | str, env: Environment, *, cache_dir: Path
) -> dict[str, Any] | None:
    """The cached probe of ``env`` (with ``cached: True``), or None; never starts a container.

    ``image`` is the image id (``sha256:…``; then no Docker engine is asked), or a docker
    client to look up the id of ``env.image`` with (None when the image is not here or
    the engine does not answer). Unreadable, foreign or older-format files count as
    missing. Blocking.
    """
    if isinstance(image, str):
        image_id = image
    else:
        try:
            image_id = str(image.images.get(env.image).id)
        except (DockerException, requests.RequestException):
            return None
    path = probe_cache_path(cache_dir, image_id, env)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(data, dict)
        or data.get("probe_version") != PROBE_VERSION
        or data.get("image_id") != image_id
    ):
        return None
    data["cached"] = True
    return data


def _write_cache(path: Path, result: dict[str, Any]) -> None:
    """Write atomically (temporary file + rename): readers see the old or the new file."""
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # mkdir's mode is filtered by the umask; the cache says which images a user runs.
        with contextlib.suppress(OSError):
            os.chmod(path.parent, 0o700)
    stored = {k: v for k, v in result.items() if k != "cached"}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".probe-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(stored, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _resolve(client: docker.DockerClient, env: Environment) -> Any:
    try:
        return client.images.get(env.image)
    except ImageNotFound:
        raise ProbeError(image_missing_message(env), http_status=400) from None
    except APIError as err:
        raise ProbeError(f"Docker could not look up the image of '{env.id}': {err}") from err
    except (DockerException, requests.RequestException) as err:
        raise ProbeError(
            f"Cannot reach the Docker engine to probe '{env.id}': {err}. {ENGINE_HINT}",
            http_status=503,
        ) from err


def _refuse_root(uid: int) -> None:
    if uid == 0:
        raise ProbeError(
            "Refusing to probe as root (uid 0): probes run as the kernel user. Run the server "
            "as your own user, or set c.DockerKernelProvisioner.uid.",
            http_status=400,
        )


def probe_spec(
    env: Environment, image_id: str, uid: int, gid: int, *, gpus: bool
) -> dict[str, Any]:
    """Keyword arguments for ``client.containers.create``: a hardened, throwaway probe.

    The same hardening as a kernel container, plus no network at all, and none of the
    catalog's mounts: the probe reads only the image (and the catalog's ``env``, which
    can change what Python imports, e.g. ``PYTHONPATH``).
    """
    _refuse_root(uid)
    environment = dict(env.env)
    environment.update(
        {
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONDONTWRITEBYTECODE": "1",
            "TFENV_ENVIRONMENT": env.id,
            "TFENV_IMAGE": env.image,
        }
    )
    if not gpus:
        # As for CPU kernels: -gpu images set NVIDIA_VISIBLE_DEVICES=all themselves.
        environment["NVIDIA_VISIBLE_DEVICES"] = "void"
        environment["CUDA_VISIBLE_DEVICES"] = ""
    spec: dict[str, Any] = {
        "image": image_id,
        "command": [env.python, CONTAINER_PROBE],
        "name": f"tfenv-probe-{safe_name(env.id, 24)}-{uuid.uuid4().hex[:8]}",
        "hostname": f"tfenv-probe-{safe_name(env.id, 40)}",
        "user": f"{uid}:{gid}",
        "environment": environment,
        "labels": {
            LABEL_PROBE: "1",
            LABEL_ENVIRONMENT: env.id,
            LABEL_IMAGE_ID: image_id,
            LABEL_IMAGE_REF: env.image,
            **server_labels(),
        },
        "mounts": [Mount(CONTAINER_PROBE, str(PROBE_SCRIPT_PATH), type="bind", read_only=True)],
        "network_mode": "none",
        **hardening(),
        "pids_limit": PROBE_PIDS,
        "mem_limit": PROBE_MEMORY,
        "memswap_limit": PROBE_MEMORY,
        "stdin_open": False,
        "tty": False,
    }
    if gpus:
        spec["device_requests"] = gpu_device_requests(env)
    return spec


class _NoGPURuntime(Exception):
    """Docker could not give the container GPUs (no NVIDIA runtime / toolkit)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _is_missing_python(env: Environment, code: int, logs: str) -> bool:
    # docker-init (tini) could not exec the interpreter: not there (127) or not executable.
    return code in (126, 127) and (
        f"exec {env.python} failed" in logs or "executable file not found" in logs
    )


def _run(
    client: docker.DockerClient,
    env: Environment,
    image_id: str,
    uid: int,
    gid: int,
    *,
    gpus: bool,
    deadline: float,
    timeout: float,
) -> dict[str, Any]:
    """Run one probe container and return the JSON it printed; always removes it."""
    spec = probe_spec(env, image_id, uid, gid, gpus=gpus)
    try:
        container = client.containers.create(**spec)
    except APIError as err:
        raise ProbeError(
            f"Docker refused to create the probe container of '{env.id}': "
            + explain_api_error(err, env)
        ) from err
    try:
        try:
            container.start()
        except APIError as err:
            text = str(err.explanation or err).lower()
            if gpus and (
                "could not select device driver" in text or "nvidia-container-cli" in text
            ):
                raise _NoGPURuntime(explain_api_error(err, env)) from err
            if "executable file not found" in text or (
                "no such file or directory" in text and "exec" in text
            ):
                raise ProbeError(
                    explain_missing_python(env, str(err.explanation).strip()), http_status=400
                ) from err
            raise ProbeError(
                f"Docker refused to start the probe container of '{env.id}': "
                + explain_api_error(err, env)
            ) from err
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise requests.exceptions.ReadTimeout("deadline passed before the wait")
            status = container.wait(timeout=remaining)
        except requests.exceptions.RequestException as err:
            if time.monotonic() < deadline - 0.5:
                raise  # not our timeout: the engine went away (handled by the caller)
            logs = tail_logs(container)
            with contextlib.suppress(APIError, DockerException):
                container.kill()
            raise ProbeError(
                f"The probe of '{env.id}' did not finish within {timeout:g} s; the container "
                "was removed. A first TensorFlow import on a busy machine or a slow disk can "
                "take long: try again, or with a longer timeout.",
                logs=logs,
                http_status=504,
            ) from err
        code = int(status.get("StatusCode", -1))
        stdout = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
        stderr = tail_logs(container) if code else ""
        if code:
            if _is_missing_python(env, code, stderr):
                raise ProbeError(explain_missing_python(env, stderr.strip()), http_status=400)
            container.reload()
            if container.attrs.get("State", {}).get("OOMKilled"):
                raise ProbeError(
                    f"The probe of '{env.id}' ran out of memory ({PROBE_MEMORY // 1024**3} GiB).",
                    logs=stderr,
                )
            raise ProbeError(
                f"The probe of '{env.id}' exited with code {code}: the image's "
                f"'{env.python}' could not run the probe script.",
                logs=stderr,
            )
        return _parse(env, stdout, container)
    finally:
        remove_quietly(container)


def _parse(env: Environment, stdout: str, container: Any) -> dict[str, Any]:
    facts = probe_facts(stdout)
    if facts is None:
        raise ProbeError(no_result_message(env), logs=tail_logs(container) or stdout[-2000:])
    return facts


def _gpu_state(env: Environment, facts: dict[str, Any]) -> dict[str, str]:
    if not env.wants_gpu:
        return {
            "state": GPU_NOT_REQUESTED,
            "message": f"'{env.id}' is a CPU environment: its kernels see no GPU.",
        }
    if facts.get("tensorflow") is None:
        why = facts.get("errors", {}).get("tensorflow", "TensorFlow is not in the image")
        return {
            "state": GPU_UNKNOWN,
            "message": f"TensorFlow could not be imported in the image ({why}), so the probe "
            "cannot tell whether it sees the GPUs.",
        }
    gpus = facts.get("gpus") or []
    if gpus:
        names = ", ".join(str(g.get("name") or g.get("device")) for g in gpus)
        return {"state": GPU_OK, "message": f"TensorFlow sees {len(gpus)} GPU(s): {names}."}
    build = facts.get("build") or {}
    message = (
        f"The container got GPUs ({env.gpu_label}), but TensorFlow {facts['tensorflow']} sees none."
    )
    if build.get("is_cuda_build") is False:
        message += (
            " This TensorFlow is a CPU-only build (is_cuda_build=false): use a GPU image "
            "such as tensorflow/tensorflow:X.Y.Z-gpu-jupyter."
        )
    else:
        cuda = build.get("cuda_version")
        message += (
            " Check the NVIDIA driver on the host (`nvidia-smi`) and that it supports the "
            f"image's CUDA{' ' + cuda if cuda else ''}."
        )
    if facts.get("errors", {}).get("gpus"):
        message += f" TensorFlow said: {facts['errors']['gpus']}"
    return {"state": GPU_NOT_VISIBLE, "message": message}


def probe_image(
    client: docker.DockerClient,
    env: Environment,
    *,
    cache_dir: Path,
    uid: int,
    gid: int,
    timeout: float = 180.0,
    refresh: bool = False,
) -> dict[str, Any]:
    """Probe ``env``'s local image (or return the cached probe); blocking.

    Returns the probe's JSON (python, python_abi, os, ipykernel, numpy, tensorflow, keras,
    build, gpus, errors, seconds) plus ``gpu_state`` ({state, message}: not_requested, ok,
    no_runtime, not_visible or unknown), ``image_id``, ``image``, ``environment``,
    ``probed_at`` (ISO 8601, UTC), ``duration_s``, ``probe_version`` and ``cached``.

    A GPU environment on an engine without the NVIDIA runtime is probed without GPUs and
    reported as ``no_runtime`` rather than failing. Raises :class:`ProbeError` when the
    image is missing, has no Python, the probe fails or takes longer than ``timeout``.
    """
    _refuse_root(uid)
    image = _resolve(client, env)
    image_id = str(image.id)
    if not refresh:
        cached = cached_probe(image_id, env, cache_dir=cache_dir)
        if cached is not None:
            return cached
    started = time.monotonic()
    deadline = started + timeout
    no_runtime: str | None = None
    try:
        try:
            facts = _run(
                client,
                env,
                image_id,
                uid,
                gid,
                gpus=env.wants_gpu,
                deadline=deadline,
                timeout=timeout,
            )
        except _NoGPURuntime as err:
            no_runtime = err.message
            facts = _run(
                client, env, image_id, uid, gid, gpus=False, deadline=deadline, timeout=timeout
            )
    except (requests.RequestException, DockerException) as err:
        if isinstance(err, APIError):
            raise ProbeError(f"Docker failed while probing '{env.id}': {err}") from err
        raise ProbeError(
            f"Lost the Docker engine while probing '{env.id}': {err}. {ENGINE_HINT}",
            http_status=503,
        ) from err
    if no_runtime is not None:
        gpu_state = {"state": GPU_NO_RUNTIME, "message": no_runtime}
    else:
        gpu_state = _gpu_state(env, facts)
    result = probe_result(env, facts, gpu_state, image_id, started)
    _write_cache(probe_cache_path(cache_dir, image_id, env), result)
    return result
