"""The host's GPUs as the server sees them, and which kernel containers use them.

Everything here is BLOCKING (NVML, ``/proc``, the docker SDK): async callers run it in a
thread (``await asyncio.to_thread(gpu_overview, client)``).

NVML comes from the optional ``nvidia-ml-py`` package (module ``pynvml``); without it, or
without the NVIDIA driver's ``libnvidia-ml.so.1``, :func:`gpu_overview` says so in its
``state`` and ``message`` instead of raising. GPU processes are mapped to containers through
``/proc/<pid>/cgroup`` and to kernels through the containers' tfenv labels, so this only
works where the server shares the host's pid namespace (a server that runs in a container
itself sees NVML's host pids as unknown and reports them without a container).
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import io
import re
import shutil
from pathlib import Path
from typing import Any

from docker.errors import APIError, DockerException, NotFound

from jupyter_tfenv.core.labels import LABEL_ENVIRONMENT, LABEL_KERNEL_ID, LABEL_OWNER

#: ``state`` values of :func:`gpu_overview`.
STATE_OK = "ok"
STATE_NO_NVML_LIBRARY = "no_nvml_library"
STATE_NO_DRIVER = "no_driver"
STATE_NO_GPU = "no_gpu"
STATE_ERROR = "error"

#: Docker's own hook for ``--gpus`` / device requests (from the NVIDIA Container Toolkit):
#: dockerd registers its "nvidia" device driver only when it finds this on its PATH.
NVIDIA_HOOK = "nvidia-container-runtime-hook"

NO_NVML_LIBRARY_MESSAGE = (
    "The Python package nvidia-ml-py (module pynvml) is not installed in the server's "
    "environment, so the server cannot read the GPUs: `pip install nvidia-ml-py` and restart "
    "the server."
)
NO_DRIVER_MESSAGE = (
    "No NVIDIA driver on this host (libnvidia-ml.so.1 not found): GPU environments cannot run "
    "here; install the NVIDIA driver (and the NVIDIA Container Toolkit for Docker), or use a "
    "CPU environment."
)

# A Docker container id in a cgroup path: cgroupfs driver (v1 and v2) ".../docker/<id>",
# systemd driver (v1 and v2, rootless too) ".../docker-<id>.scope".
_DOCKER_CGROUP = re.compile(r"(?:/docker/|/docker-)([0-9a-f]{64})(?:\.scope)?(?=/|$)")


def _nvml() -> Any:
    """The ``pynvml`` module, or None when nvidia-ml-py is not installed."""
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        return None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _cuda_version(value: Any) -> str | None:
    """NVML's CUDA driver version (12040) → "12.4"."""
    if not isinstance(value, int) or value <= 0:
        return None
    return f"{value // 1000}.{(value % 1000) // 10}"


def _compute_capability(value: Any) -> str | None:
    """NVML's ``(major, minor)`` compute capability → "8.0"; None when NVML did not say."""
    try:
        major, minor = value
        return f"{int(major)}.{int(minor)}"
    except (TypeError, ValueError):
        return None


# -- processes → containers → kernels ----------------------------------------------------


def container_id_of_pid(pid: int, proc_root: str = "/proc") -> str | None:
    """The id (64 hex) of the Docker container that process ``pid`` runs in, or None.

    Reads ``<proc_root>/<pid>/cgroup``: cgroup v1 lines ``N:ctrl:/docker/<id>`` and the v2
    line ``0::/system.slice/docker-<id>.scope`` (or ``0::/docker/<id>``). Nested paths
    (Docker in Docker, systemd inside a container) give the innermost Docker container.
    None for a host process, a vanished pid, or a /proc we may not read.
    """
    try:
        text = (Path(proc_root) / str(int(pid)) / "cgroup").read_text()
    except (OSError, ValueError):
        return None
    found: str | None = None
    # The v2 line ("0::") is last on hybrid hosts; every line names the same container,
    # and the last match of a line is its innermost container.
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        matches = _DOCKER_CGROUP.findall(path)
        if matches:
            found = matches[-1]
    return found


class KernelContainers:
    """Labels of the running tfenv kernel containers, listed once, looked up by id."""

    def __init__(self, docker_client: Any = None) -> None:
        self._client = docker_client
        self._labels: dict[str, dict[str, str]] | None = None
        self.error: str | None = None

    def labels(self, container_id: str) -> dict[str, str] | None:
        if self._labels is None:
            self._labels = {}
            if self._client is not None:
                try:
                    containers = self._client.containers.list(filters={"label": LABEL_KERNEL_ID})
                except (DockerException, OSError) as err:
                    self.error = f"Could not list the kernel containers: {err}"
                else:
                    self._labels = {c.id: dict(c.labels or {}) for c in containers}
        return self._labels.get(container_id)

    def describe(
        self, pid: int, used_memory: int | None, proc_root: str = "/proc"
    ) -> dict[str, Any]:
        """One GPU process: its pid, memory, container and (for tfenv kernels) kernel."""
        container_id = container_id_of_pid(pid, proc_root)
        labels = self.labels(container_id) if container_id else None
        labels = labels or {}
        return {
            "pid": pid,
            "used_memory": used_memory,
            "container_id": container_id,
            "kernel_id": labels.get(LABEL_KERNEL_ID),
            "owner": labels.get(LABEL_OWNER),
            "environment": labels.get(LABEL_ENVIRONMENT),
        }


# -- Docker's GPU support -------------------------------------------------------------------


def _engine_is_local(docker_client: Any) -> bool:
    base = str(getattr(getattr(docker_client, "api", None), "base_url", ""))
    return base.startswith(("http+docker://localhost", "http+docker://localunixsocket"))


def docker_gpu_runtime(docker_client: Any) -> dict[str, Any]:
    """Whether this Docker engine can give containers NVIDIA GPUs, from ``docker info``.

    ``nvidia``: an ``nvidia`` runtime is registered (``nvidia-ctk runtime configure``) or is
    the default. ``hook``: the path of ``nvidia-container-runtime-hook`` on this host, which
    is what ``--gpus`` (the provisioner's device requests) really needs; only looked for when
    the engine is local, None otherwise.
    """
    try:
        info = docker_client.info()
    except (DockerException, OSError) as err:
        return {
            "nvidia": False,
            "default": None,
            "runtimes": [],
            "hook": None,
            "message": f"Could not ask the Docker engine for its runtimes: {err}",
        }
    runtimes = sorted((info.get("Runtimes") or {}).keys())
    default = info.get("DefaultRuntime") or "runc"
    nvidia = "nvidia" in runtimes or default == "nvidia"
    hook = shutil.which(NVIDIA_HOOK) if _engine_is_local(docker_client) else None
    names = ", ".join(runtimes) or "none"
    if nvidia:
        message = f"This Docker engine has the NVIDIA runtime (runtimes: {names}; default: "
        message += f"{default})."
    elif hook:
        message = (
            f"This Docker engine registers no 'nvidia' runtime (runtimes: {names}), but "
            f"{hook} is installed, so GPU requests (--gpus) should work once Docker was "
            "restarted after installing it. `sudo nvidia-ctk runtime configure --runtime=docker"
            "` and a Docker restart register the runtime too."
        )
    else:
        message = (
            f"This Docker engine has no NVIDIA runtime (runtimes: {names}; default: {default})"
            ": GPU environments cannot start here. Install the NVIDIA driver and the NVIDIA "
            "Container Toolkit, run `sudo nvidia-ctk runtime configure --runtime=docker` and "
            "restart Docker; or pick a CPU environment."
        )
    return {
        "nvidia": nvidia,
        "default": default,
        "runtimes": runtimes,
        "hook": hook,
        "message": message,
    }


# -- NVML ---------------------------------------------------------------------------------


def _init_failure(nvml: Any, err: Exception) -> tuple[str, str]:
    """(state, message) for an ``nvmlInit`` that failed."""
    code = getattr(err, "value", None)
    if code == nvml.NVML_ERROR_LIBRARY_NOT_FOUND:
        return STATE_NO_DRIVER, NO_DRIVER_MESSAGE
    if code == nvml.NVML_ERROR_DRIVER_NOT_LOADED:
        return STATE_NO_DRIVER, (
            "The NVIDIA driver's library is installed but its kernel module is not loaded "
            f"(NVML: {err}): GPU environments cannot run here until it is. Load it (`sudo "
            "modprobe nvidia`) or reboot after installing the driver."
        )
    if code == nvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH:
        return STATE_ERROR, (
            f"The NVIDIA driver library and kernel module differ in version (NVML: {err}), "
            "usually after a driver upgrade without a reboot: reboot the host."
        )
    if code == nvml.NVML_ERROR_NO_PERMISSION:
        return STATE_ERROR, (
            f"The server's user may not open the NVIDIA devices (NVML: {err}): check the "
            "permissions of /dev/nvidia* for the server's user."
        )
    return STATE_ERROR, f"NVML could not start (NVML: {err})."


def _errors(nvml: Any) -> tuple[type[Exception], ...]:
    """NVML's errors. pynvml raises NVMLLibraryMismatchError (not an NVMLError) when an
    unversioned function is missing from an older driver's library."""
    mismatch = getattr(nvml, "NVMLLibraryMismatchError", None)
    return (nvml.NVMLError, mismatch) if mismatch is not None else (nvml.NVMLError,)


def _safe(nvml: Any, func: Any, *args: Any) -> Any:
    """``func(*args)``, or None when NVML says not supported / not available."""
    try:
        return func(*args)
    except _errors(nvml):
        return None


def _processes(nvml: Any, handle: Any) -> list[tuple[int, int | None]]:
    """(pid, used bytes) of a GPU's compute and graphics processes, each pid once."""
    found: dict[int, int | None] = {}
    for names in (
        ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetComputeRunningProcesses_v2"),
        ("nvmlDeviceGetGraphicsRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses_v2"),
    ):
        for name in names:  # the newest struct first; older drivers lack its function
            func = getattr(nvml, name, None)
            if func is None:
                continue
            try:
                procs = func(handle)
            except _errors(nvml):
                continue
            for proc in procs:
                used = getattr(proc, "usedGpuMemory", None)
                pid = int(proc.pid)
                if pid not in found or (found[pid] is None and used is not None):
                    found[pid] = int(used) if used is not None else None
            break
    return sorted(found.items())


def _gpu(nvml: Any, index: int, kernels: KernelContainers, proc_root: str) -> dict[str, Any]:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    memory = _safe(nvml, nvml.nvmlDeviceGetMemoryInfo, handle)
    rates = _safe(nvml, nvml.nvmlDeviceGetUtilizationRates, handle)
    temperature = _safe(nvml, nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
    power = _safe(nvml, nvml.nvmlDeviceGetPowerUsage, handle)  # milliwatts
    name = _safe(nvml, nvml.nvmlDeviceGetName, handle)
    uuid = _safe(nvml, nvml.nvmlDeviceGetUUID, handle)
    capability = _safe(
        nvml, getattr(nvml, "nvmlDeviceGetCudaComputeCapability", lambda h: None), handle
    )
    return {
        "index": index,
        "uuid": _text(uuid) if uuid is not None else None,
        "name": _text(name) if name is not None else None,
        # "8.0": what the kernels' CUDA code must be built for (jupyter_tfenv.kernels.compat).
        "compute_capability": _compute_capability(capability),
        "memory_used": int(memory.used) if memory is not None else None,
        "memory_total": int(memory.total) if memory is not None else None,
        "utilization_gpu": int(rates.gpu) if rates is not None else None,
        "utilization_memory": int(rates.memory) if rates is not None else None,
        "temperature": int(temperature) if temperature is not None else None,
        "power_watts": round(power / 1000.0, 1) if power is not None else None,
        "processes": [
            kernels.describe(pid, used, proc_root) for pid, used in _processes(nvml, handle)
        ],
        "mig_devices": _mig_devices(nvml, handle),
    }


def _mig_devices(nvml: Any, handle: Any) -> list[dict[str, Any]]:
    """The MIG instances of a GPU in MIG mode (the GPU allocator hands out these)."""
    mode = _safe(nvml, getattr(nvml, "nvmlDeviceGetMigMode", lambda h: None), handle)
    if not mode or not mode[0]:
        return []
    count = _safe(nvml, nvml.nvmlDeviceGetMaxMigDeviceCount, handle) or 0
    found = []
    for position in range(int(count)):
        mig = _safe(nvml, nvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, position)
        if mig is None:
            continue
        uuid = _safe(nvml, nvml.nvmlDeviceGetUUID, mig)
        memory = _safe(nvml, nvml.nvmlDeviceGetMemoryInfo, mig)
        name = _safe(nvml, nvml.nvmlDeviceGetName, mig)
        if uuid is not None:
            found.append(
                {
                    "uuid": _text(uuid),
                    "name": _text(name) if name is not None else None,
                    "memory_total": int(memory.total) if memory is not None else None,
                }
            )
    return found


def gpu_overview(docker_client: Any = None, *, proc_root: str = "/proc") -> dict[str, Any]:
    """The host's NVIDIA GPUs, their use, and which kernels hold memory on them. BLOCKING.

    Never raises for a missing package, driver or GPU: ``state`` is one of ``ok``,
    ``no_nvml_library``, ``no_driver``, ``no_gpu`` or ``error`` and ``message`` says what to
    do. With a ``docker_client``, ``runtime`` says whether Docker can hand out GPUs (see
    :func:`docker_gpu_runtime`) and GPU processes are matched to kernel containers.
    Memory is in bytes, utilization in percent, temperature in °C; ``cuda_driver_version``
    ("12.4") is the newest CUDA the driver supports and each GPU's ``compute_capability``
    ("8.0") its architecture: the host facts of :mod:`jupyter_tfenv.kernels.compat`.
    """
    overview: dict[str, Any] = {
        "state": STATE_ERROR,
        "message": "",
        "runtime": docker_gpu_runtime(docker_client) if docker_client is not None else None,
        "driver_version": None,
        "cuda_driver_version": None,
        "gpus": [],
    }
    nvml = _nvml()
    if nvml is None:
        overview.update(state=STATE_NO_NVML_LIBRARY, message=NO_NVML_LIBRARY_MESSAGE)
        return overview
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as err:
        state, message = _init_failure(nvml, err)
        overview.update(state=state, message=message)
        return overview
    try:
        driver = _safe(nvml, nvml.nvmlSystemGetDriverVersion)
        overview["driver_version"] = _text(driver) if driver is not None else None
        overview["cuda_driver_version"] = _cuda_version(
            _safe(nvml, nvml.nvmlSystemGetCudaDriverVersion)
        )
        count = int(nvml.nvmlDeviceGetCount())
        kernels = KernelContainers(docker_client)
        gpus = []
        for index in range(count):
            try:
                gpus.append(_gpu(nvml, index, kernels, proc_root))
            except _errors(nvml) as err:  # one lost or inaccessible GPU, not all of them
                gpus.append({"index": index, "error": f"NVML: {err}", "processes": []})
        overview["gpus"] = gpus
        if kernels.error:
            overview["kernel_lookup_error"] = kernels.error
    except _errors(nvml) as err:
        overview.update(state=STATE_ERROR, message=f"Reading the GPUs failed (NVML: {err}).")
        return overview
    finally:
        with contextlib.suppress(*_errors(nvml)):
            nvml.nvmlShutdown()
    version = overview["driver_version"] or "?"
    if not overview["gpus"]:
        overview.update(
            state=STATE_NO_GPU,
            message=(
                f"The NVIDIA driver ({version}) is loaded but sees no GPU: GPU environments "
                "cannot run here. Check `nvidia-smi` on the host."
            ),
        )
        return overview
    cuda = overview["cuda_driver_version"]
    overview.update(
        state=STATE_OK,
        message=f"{len(overview['gpus'])} NVIDIA GPU(s), driver {version}"
        + (f" (CUDA {cuda})." if cuda else "."),
    )
    return overview


# -- fallback: nvidia-smi inside a GPU container ---------------------------------------------

_SMI_FIELDS = (
    "index",
    "uuid",
    "name",
    "driver_version",
    "memory.used",
    "memory.total",
    "utilization.gpu",
    "utilization.memory",
    "temperature.gpu",
    "power.draw",
)
SMI_COMMAND = [
    "nvidia-smi",
    "--query-gpu=" + ",".join(_SMI_FIELDS),
    "--format=csv,noheader,nounits",
]
_MIB = 1024 * 1024


def _smi_number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:  # "[N/A]", "[Not Supported]"
        return None


def _smi_int(value: str, scale: int = 1) -> int | None:
    number = _smi_number(value)
    return int(number * scale) if number is not None else None


def parse_nvidia_smi(output: str) -> list[dict[str, Any]]:
    """``nvidia-smi --query-gpu=…`` CSV (see ``SMI_COMMAND``) → GPU dicts as in the overview."""
    gpus: list[dict[str, Any]] = []
    for row in csv.reader(io.StringIO(output), skipinitialspace=True):
        if len(row) < len(_SMI_FIELDS):
            continue
        # A name with a comma would split in two: the fields around it are fixed.
        tail = len(_SMI_FIELDS) - 3
        name = ", ".join(row[2 : len(row) - tail])
        rest = [v.strip() for v in row[len(row) - tail :]]
        power = _smi_number(rest[6])
        gpus.append(
            {
                "index": _smi_int(row[0]),
                "uuid": row[1].strip(),
                "name": name.strip(),
                "driver_version": rest[0],
                "memory_used": _smi_int(rest[1], _MIB),
                "memory_total": _smi_int(rest[2], _MIB),
                "utilization_gpu": _smi_int(rest[3]),
                "utilization_memory": _smi_int(rest[4]),
                "temperature": _smi_int(rest[5]),
                "power_watts": round(power, 1) if power is not None else None,
                "processes": [],  # nvidia-smi in a container cannot name host processes
            }
        )
    return gpus


def nvidia_smi_in_container(container: Any) -> dict[str, Any] | None:
    """The GPUs as ``nvidia-smi`` inside a running GPU container sees them. BLOCKING.

    A fallback for hosts where the server cannot use NVML itself (no nvidia-ml-py in the
    server's environment, or a server without access to the driver) while a GPU kernel's
    container has the driver's tools mounted by the NVIDIA runtime. Returns an overview-like
    dict (``source: "nvidia-smi"``, no processes), or None when the container has no
    ``nvidia-smi`` or is not running. Runs a process in the container: call it on demand,
    not on every poll.
    """
    try:
        result = container.exec_run(SMI_COMMAND, stdout=True, stderr=True)
    except (NotFound, APIError):  # gone, or not running (409)
        return None
    output = _text(result.output or b"")
    if result.exit_code != 0:
        lowered = output.lower()
        if result.exit_code in (126, 127) or "not found" in lowered or "no such file" in lowered:
            return None
        return {
            "state": STATE_ERROR,
            "source": "nvidia-smi",
            "message": f"nvidia-smi in the container failed ({result.exit_code}): "
            + output.strip()[:500],
            "driver_version": None,
            "gpus": [],
        }
    gpus = parse_nvidia_smi(output)
    return {
        "state": STATE_OK if gpus else STATE_NO_GPU,
        "source": "nvidia-smi",
        "message": f"{len(gpus)} GPU(s) seen by nvidia-smi in container {container.name}.",
        "driver_version": gpus[0]["driver_version"] if gpus else None,
        "gpus": gpus,
    }
