"""A stand-in for nvidia-ml-py's ``pynvml``, as NVML answers on a host whose driver
470.82.01 supports CUDA 11.4, with one A100 (compute capability 8.0), or other GPUs and
driver (:func:`fake_pynvml`): the facts ``gpu_overview()`` reads, nothing else. In
process, exec :data:`FAKE_PYNVML` into a module put in ``sys.modules``; for a subprocess,
:func:`fake_pynvml_dir` writes ``pynvml.py`` into a folder to put first on its
``PYTHONPATH``.
"""

from __future__ import annotations

from pathlib import Path

DRIVER_VERSION = "470.82.01"
CUDA_DRIVER_VERSION = "11.4"

#: One GPU as NVML names it: (name, UUID, compute capability).
A100 = ("NVIDIA A100-SXM4-40GB", "GPU-00000000-0000-0000-0000-000000000000", (8, 0))


def fake_pynvml(
    gpus: list[tuple[str, str, tuple[int, int]]] | None = None,
    *,
    driver: str = DRIVER_VERSION,
    cuda: int = 11040,
) -> str:
    """The source of a stand-in ``pynvml`` whose host has ``gpus`` (default: one A100), the
    driver ``driver`` and NVML's CUDA version number ``cuda`` (11040: CUDA 11.4)."""
    devices = list(gpus or [A100])
    return f"""
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_NO_PERMISSION = 4
NVML_TEMPERATURE_GPU = 0
_GPUS = {devices!r}


class NVMLError(Exception):
    value = 3


def _unsupported(*args):
    raise NVMLError("Not Supported")


nvmlInit = nvmlShutdown = lambda: None
nvmlSystemGetDriverVersion = lambda: {driver!r}
nvmlSystemGetCudaDriverVersion = lambda: {cuda!r}
nvmlDeviceGetCount = lambda: len(_GPUS)
nvmlDeviceGetHandleByIndex = lambda index: index
nvmlDeviceGetName = lambda handle: _GPUS[handle][0]
nvmlDeviceGetUUID = lambda handle: _GPUS[handle][1]
nvmlDeviceGetCudaComputeCapability = lambda handle: _GPUS[handle][2]
nvmlDeviceGetMemoryInfo = nvmlDeviceGetUtilizationRates = _unsupported
nvmlDeviceGetTemperature = nvmlDeviceGetPowerUsage = _unsupported
nvmlDeviceGetComputeRunningProcesses = nvmlDeviceGetGraphicsRunningProcesses = _unsupported
"""


#: The default host: driver 470.82.01 (CUDA 11.4), one A100.
FAKE_PYNVML = fake_pynvml()


def fake_pynvml_dir(folder: Path) -> Path:
    """``folder`` with the stand-in ``pynvml.py`` in it (for a subprocess's PYTHONPATH)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pynvml.py").write_text(FAKE_PYNVML)
    return folder
