"""The compatibility check (issue 20 item 2): real probe outputs against NVML-shaped facts."""

from __future__ import annotations

import copy
import importlib.util
import sys
import types
from typing import Any

import pytest

from jupyter_tfenv.kernels.compat import (
    CUDA_MIN_DRIVER,
    check_compatibility,
    cuda_version,
    parse_architectures,
)
from jupyter_tfenv.kernels.probe_output import PROBE_SCRIPT_PATH

# What `jupyter tfenv probe` answers for tensorflow/tensorflow:2.20.0-gpu-jupyter (TF 2.20's
# .bazelrc builds sm_60,sm_70,sm_80,sm_89,compute_90 with CUDA 12.5.1 and cuDNN 9).
TF220_GPU: dict[str, Any] = {
    "environment": "tf220-gpu",
    "image": "tensorflow/tensorflow:2.20.0-gpu-jupyter",
    "python": "3.11.2",
    "tensorflow": "2.20.0",
    "build": {
        "cuda_version": "12.5.1",
        "cudnn_version": "9",
        "is_cuda_build": True,
        "is_rocm_build": False,
        "is_tensorrt_build": False,
        "cuda_compute_capabilities": ["sm_60", "sm_70", "sm_80", "sm_89", "compute_90"],
    },
    "gpus": [],
    "gpu_state": {"state": "no_runtime", "message": "no NVIDIA runtime"},
    "errors": {},
    "probe_version": 1,
    "cached": True,
}
# tensorflow/tensorflow:2.11.0-gpu (CUDA 11.2, cuDNN 8.1).
TF211_GPU: dict[str, Any] = {
    **TF220_GPU,
    "environment": "tf211-gpu",
    "tensorflow": "2.11.0",
    "build": {
        "cuda_version": "11.2",
        "cudnn_version": "8",
        "is_cuda_build": True,
        "is_rocm_build": False,
        "is_tensorrt_build": True,
        "cuda_compute_capabilities": ["sm_35", "sm_50", "sm_60", "sm_70", "sm_75", "compute_80"],
    },
}
# The tensorflow-cpu wheel's probe (tests/backends/test_probe.py), in a GPU environment.
TF220_CPU_BUILD: dict[str, Any] = {
    **TF220_GPU,
    "build": {
        "cuda_version": None,
        "cudnn_version": None,
        "is_cuda_build": False,
        "is_rocm_build": False,
        "is_tensorrt_build": False,
    },
}


def host(driver: str, cuda: str | None, *gpus: tuple[str, str | None]) -> dict[str, Any]:
    """gpu_overview()'s answer on an NVML host."""
    return {
        "state": "ok",
        "message": f"{len(gpus)} NVIDIA GPU(s), driver {driver}",
        "runtime": None,
        "driver_version": driver,
        "cuda_driver_version": cuda,
        "gpus": [
            {"index": i, "uuid": f"GPU-{i}", "name": name, "compute_capability": cc}
            for i, (name, cc) in enumerate(gpus)
        ],
    }


H100 = ("NVIDIA H100 80GB HBM3", "9.0")
A100 = ("NVIDIA A100-SXM4-40GB", "8.0")
K80 = ("Tesla K80", "3.7")
RTX5090 = ("NVIDIA GeForce RTX 5090", "12.0")
NO_DRIVER = {
    "state": "no_driver",
    "message": "No NVIDIA driver on this host (libnvidia-ml.so.1 not found): GPU environments "
    "cannot run here.",
    "driver_version": None,
    "cuda_driver_version": None,
    "gpus": [],
}


def test_cpu_environments_are_not_applicable() -> None:
    verdict = check_compatibility(None, NO_DRIVER, env_id="cpu", wants_gpu=False)
    assert verdict.state == "not_applicable" and verdict.ok
    probe = {**TF220_GPU, "gpu_state": {"state": "not_requested"}}
    assert check_compatibility(probe, NO_DRIVER).state == "not_applicable"


def test_no_probe_is_unknown_and_says_how_to_probe() -> None:
    verdict = check_compatibility(
        None, host("560.35.03", "12.6", H100), env_id="tf", wants_gpu=True
    )
    assert verdict.state == "unknown" and not verdict.ok
    assert "has not been probed" in verdict.message
    assert "`jupyter tfenv probe tf`" in verdict.message and "panel" in verdict.message
    assert verdict.details["missing"] == "probe"


def test_no_tensorflow_or_no_build_info_is_unknown() -> None:
    broken = {**TF220_GPU, "tensorflow": None, "build": None}
    broken["errors"] = {"tensorflow": "No module named 'tensorflow'"}
    verdict = check_compatibility(broken, host("560.35.03", "12.6", H100))
    assert verdict.state == "unknown" and "No module named 'tensorflow'" in verdict.message
    no_build = {**TF220_GPU, "build": None, "errors": {"build": "the Python process was killed"}}
    verdict = check_compatibility(no_build, host("560.35.03", "12.6", H100))
    assert verdict.state == "unknown" and "killed" in verdict.message


def test_without_the_hosts_driver_it_is_unknown_never_ok() -> None:
    verdict = check_compatibility(TF220_GPU, NO_DRIVER)
    assert verdict.state == "unknown"
    assert verdict.message.startswith("Cannot read the host's driver")
    assert "libnvidia-ml.so.1 not found" in verdict.message
    assert check_compatibility(TF220_GPU, None).state == "unknown"
    no_cuda = host("560.35.03", None, H100)
    verdict = check_compatibility(TF220_GPU, no_cuda)
    assert verdict.state == "unknown" and "did not report the CUDA version" in verdict.message


def test_a_matching_driver_and_gpu_is_ok() -> None:
    verdict = check_compatibility(TF220_GPU, host("560.35.03", "12.6", H100, A100))
    assert verdict.state == "ok", verdict.message
    assert "GPU 0 (NVIDIA H100 80GB HBM3, compute capability 9.0)" in verdict.message
    assert verdict.details["usable_devices"] == [0, 1]
    assert verdict.details["minor_version_compatibility"] is False
    assert [d["code"] for d in verdict.details["devices"]] == ["sass", "sass"]
    # TF 2.11 (CUDA 11.2) on a 12.x driver: a newer driver runs older CUDA.
    assert check_compatibility(TF211_GPU, host("560.35.03", "12.6", A100)).state == "ok"


def test_a_driver_of_an_older_major_is_incompatible_with_what_to_do() -> None:
    verdict = check_compatibility(TF220_GPU, host("470.82.01", "11.4", A100))
    assert verdict.state == "incompatible"
    assert verdict.details["reason"] == "driver_too_old"
    assert "built for CUDA 12.5" in verdict.message
    assert "the host's driver 470.82.01 supports CUDA up to 11.4" in verdict.message
    assert "an NVIDIA driver >= 555.42.02 (CUDA 12.5)" in verdict.message
    assert ">= 525.60.13 (CUDA 12.0)" in verdict.message
    assert "or use an image built for CUDA 11.4 or older" in verdict.message


def test_minor_version_compatibility_runs_native_code_on_an_older_12x_driver() -> None:
    # CUDA 12.5 build, driver for 12.2: the H100 has native code (compute_90 = SASS + PTX).
    verdict = check_compatibility(TF220_GPU, host("535.104.05", "12.2", H100))
    assert verdict.state == "ok", verdict.message
    assert verdict.details["minor_version_compatibility"] is True
    assert "minor-version compatibility" in verdict.message
    assert "555.42.02" in verdict.message


def test_ptx_only_gpus_need_a_driver_as_new_as_the_build() -> None:
    # An RTX 5090 (12.0): no sm_120 in TF 2.20, only compute_90 PTX for the driver's JIT.
    old = check_compatibility(TF220_GPU, host("535.104.05", "12.2", RTX5090))
    assert old.state == "incompatible", old.message
    assert "GPU 0 (NVIDIA GeForce RTX 5090, compute capability 12.0)" in old.message
    assert "only PTX (compute_90)" in old.message
    assert "555.42.02" in old.message  # the driver that fixes it
    new = check_compatibility(TF220_GPU, host("570.124.06", "12.8", RTX5090))
    assert new.state == "ok" and "first start is slow" in new.message
    assert new.details["devices"][0]["code"] == "ptx"


def test_a_gpu_older_than_every_architecture_is_named() -> None:
    verdict = check_compatibility(TF220_GPU, host("560.35.03", "12.6", K80))
    assert verdict.state == "incompatible"
    assert "GPU 0 (Tesla K80, compute capability 3.7)" in verdict.message
    assert "older than every architecture the build has code for" in verdict.message
    assert "sm_60, compute capability 6.0" in verdict.message
    # A mixed host: ok where it can run, the other GPU named.
    mixed = check_compatibility(TF220_GPU, host("560.35.03", "12.6", A100, K80))
    assert mixed.state == "ok"
    assert mixed.details["usable_devices"] == [0]
    assert "Not on: GPU 1 (Tesla K80, compute capability 3.7)" in mixed.message
    # TF 2.11 still has sm_35: a 3.7 GPU runs SASS of its major at a lower minor.
    assert check_compatibility(TF211_GPU, host("470.82.01", "11.4", K80)).state == "ok"


def test_explicit_gpu_ids_judge_only_those_gpus() -> None:
    mixed = host("560.35.03", "12.6", A100, K80)
    on_k80 = check_compatibility(TF220_GPU, mixed, devices=["1"])
    assert on_k80.state == "incompatible" and "GPU 1 (Tesla K80" in on_k80.message
    assert check_compatibility(TF220_GPU, mixed, devices=["GPU-0"]).state == "ok"
    gone = check_compatibility(TF220_GPU, mixed, devices=["7"])
    assert gone.state == "unknown" and "asks for GPU 7" in gone.message


def test_a_cpu_only_tensorflow_in_a_gpu_environment_is_incompatible() -> None:
    verdict = check_compatibility(TF220_CPU_BUILD, host("560.35.03", "12.6", H100))
    assert verdict.state == "incompatible" and "CPU-only build" in verdict.message


def test_a_probe_without_architectures_is_unknown() -> None:
    old = copy.deepcopy(TF220_GPU)
    del old["build"]["cuda_compute_capabilities"]
    verdict = check_compatibility(old, host("560.35.03", "12.6", H100))
    assert verdict.state == "unknown"
    assert "`jupyter tfenv probe tf220-gpu --refresh`" in verdict.message
    # Through minor-version compatibility it says so.
    verdict = check_compatibility(old, host("535.104.05", "12.2", H100))
    assert verdict.state == "unknown" and "only through minor-version" in verdict.message
    # …but an old driver is a verdict without them.
    assert check_compatibility(old, host("470.82.01", "11.4", H100)).state == "incompatible"


def test_an_unknown_device_capability_is_unknown() -> None:
    verdict = check_compatibility(TF220_GPU, host("560.35.03", "12.6", ("GPU", None)))
    assert verdict.state == "unknown"


def test_an_11x_driver_below_the_minor_compatibility_floor() -> None:
    tf212 = copy.deepcopy(TF211_GPU)
    tf212["build"]["cuda_version"] = "11.8"
    assert check_compatibility(tf212, host("450.51.06", "11.0", A100)).state == "incompatible"
    assert check_compatibility(tf212, host("470.82.01", "11.4", A100)).state == "ok"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("12.5.1", (12, 5)), ("11.2", (11, 2)), ("12", (12, 0)), ("64_112", (11, 2)), ("x", None)],
)
def test_cuda_versions(text: str, expected: tuple[int, int] | None) -> None:
    assert cuda_version(text) == expected


def test_architectures_as_tensorflow_writes_them() -> None:
    archs, unknown = parse_architectures(["sm_60", "compute_90", "sm_90a", "lto_80"])
    assert [(a.name, a.sass, a.ptx) for a in archs] == [
        ("sm_60", True, False),
        ("compute_90", True, True),
        ("sm_90a", True, False),
    ]
    assert unknown == ["lto_80"]
    assert archs[2].runs_natively_on((9, 0)) and not archs[2].runs_natively_on((9, 1))
    # Old "x.y" lists: SASS for each, PTX for the highest (TF's cuda_configure.bzl).
    archs, _ = parse_architectures("3.5,7.0")
    assert [a.name for a in archs] == ["sm_35", "compute_70"]
    assert (12, 0) in CUDA_MIN_DRIVER and (11, 8) in CUDA_MIN_DRIVER


def test_the_probe_script_reports_the_architectures(monkeypatch: pytest.MonkeyPatch) -> None:
    """probe.py's build part, with tf.sysconfig answering as TF 2.20's GPU wheel does."""
    info = {
        "cpu_compiler": "/usr/lib/llvm-18/bin/clang",
        "cuda_compute_capabilities": ["sm_60", "sm_70", "sm_80", "sm_89", "compute_90"],
        "cuda_version": "12.5.1",
        "cudnn_version": "9",
        "is_cuda_build": True,
        "is_rocm_build": False,
        "is_tensorrt_build": False,
    }
    fake = types.ModuleType("tensorflow")
    fake.sysconfig = types.SimpleNamespace(get_build_info=lambda: info)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorflow", fake)
    spec = importlib.util.spec_from_file_location("tfenv_probe_script", PROBE_SCRIPT_PATH)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    build = script._build()
    assert build["cuda_compute_capabilities"] == info["cuda_compute_capabilities"]
    assert build["cuda_version"] == "12.5.1" and build["is_cuda_build"] is True
    verdict = check_compatibility(
        {**TF220_GPU, "build": build}, host("560.35.03", "12.6", H100), env_id="tf220-gpu"
    )
    assert verdict.state == "ok"
    # A CPU wheel's build info has no architectures: the key is left out.
    info = {"is_cuda_build": False, "is_rocm_build": False, "is_tensorrt_build": False}
    assert "cuda_compute_capabilities" not in script._build()
