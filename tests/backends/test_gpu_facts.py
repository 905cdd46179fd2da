"""The NVML facts the compatibility check reads, as NVML gives them (no GPU needed)."""

from __future__ import annotations

from jupyter_tfenv.backends.docker.gpu import _compute_capability, _cuda_version, gpu_overview


def test_nvml_values_become_the_overviews_strings() -> None:
    # nvmlSystemGetCudaDriverVersion: 1000 * major + 10 * minor.
    assert _cuda_version(12040) == "12.4"
    assert _cuda_version(11080) == "11.8"
    assert _cuda_version(0) is None and _cuda_version(None) is None
    # nvmlDeviceGetCudaComputeCapability: (major, minor).
    assert _compute_capability((8, 0)) == "8.0"
    assert _compute_capability((9, 0)) == "9.0"
    assert _compute_capability(None) is None
    assert _compute_capability("x") is None


def test_overview_without_a_driver_keeps_its_shape() -> None:
    overview = gpu_overview()
    if overview["state"] == "ok":  # a GPU host: every GPU says its capability
        assert all("compute_capability" in gpu for gpu in overview["gpus"])
        return
    assert overview["cuda_driver_version"] is None and overview["gpus"] == []
    assert overview["message"]
