"""A stand-in for nvidia-ml-py's ``pynvml``, as NVML answers on a host whose driver
470.82.01 supports CUDA 11.4, with one A100 (compute capability 8.0): the facts
``gpu_overview()`` reads, nothing else. In process, exec :data:`FAKE_PYNVML` into a module
put in ``sys.modules``; for a subprocess, :func:`fake_pynvml_dir` writes ``pynvml.py`` into
a folder to put first on its ``PYTHONPATH``.
"""

from __future__ import annotations

from pathlib import Path

DRIVER_VERSION = "470.82.01"
CUDA_DRIVER_VERSION = "11.4"

FAKE_PYNVML = """
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_NO_PERMISSION = 4
NVML_TEMPERATURE_GPU = 0


class NVMLError(Exception):
    value = 3


def _unsupported(*args):
    raise NVMLError("Not Supported")


nvmlInit = nvmlShutdown = lambda: None
nvmlSystemGetDriverVersion = lambda: "470.82.01"
nvmlSystemGetCudaDriverVersion = lambda: 11040
nvmlDeviceGetCount = lambda: 1
nvmlDeviceGetHandleByIndex = lambda index: index
nvmlDeviceGetName = lambda handle: "NVIDIA A100-SXM4-40GB"
nvmlDeviceGetUUID = lambda handle: "GPU-00000000-0000-0000-0000-000000000000"
nvmlDeviceGetCudaComputeCapability = lambda handle: (8, 0)
nvmlDeviceGetMemoryInfo = nvmlDeviceGetUtilizationRates = _unsupported
nvmlDeviceGetTemperature = nvmlDeviceGetPowerUsage = _unsupported
nvmlDeviceGetComputeRunningProcesses = nvmlDeviceGetGraphicsRunningProcesses = _unsupported
"""


def fake_pynvml_dir(folder: Path) -> Path:
    """``folder`` with the stand-in ``pynvml.py`` in it (for a subprocess's PYTHONPATH)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pynvml.py").write_text(FAKE_PYNVML)
    return folder
