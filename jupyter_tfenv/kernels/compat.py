"""Can this environment's TensorFlow use this host's GPUs? Facts in, verdict out.

Compares the image's probe (``in_container/probe.py``: the CUDA and cuDNN TensorFlow was
built with, ``build.cuda_compute_capabilities``) with the host's NVML facts
(``backends/docker/gpu.py``'s ``gpu_overview``: ``cuda_driver_version``, the newest CUDA the
driver supports, and each GPU's ``compute_capability``). Pure: no Docker, no NVML; the
callers gather the facts (``jupyter tfenv check``; the kernel start and the panel next).

The rules (docs/gpus.md, "Compatibility check"):

* a CPU environment: ``not_applicable``;
* no probe, no TensorFlow, no build info, a ROCm build, or no driver facts: ``unknown``
  with what is missing and how to get it; never ``ok`` on a guess;
* a CPU-only TensorFlow in a GPU environment: ``incompatible`` (it never uses a GPU);
* the driver's CUDA older than the build's major.minor: ``incompatible`` when the majors
  differ (or the build predates CUDA 11), or when the driver is below the minimum of the
  major's minor-version compatibility. Within a major (CUDA 11 and later) NVIDIA's
  minor-version compatibility runs a newer 12.x build on a driver for 12.0+, *except* code
  the driver must JIT-compile from PTX: the driver's JIT cannot read PTX from a newer
  toolkit. So a GPU that has native code (SASS) in the build is fine there, a GPU that
  would need the PTX is not;
* per GPU: native code for its architecture (``sm_XY``: SASS of the same major and a minor
  at or below the GPU's), else PTX at or below it (``compute_XY``, which in TensorFlow's
  builds means SASS *and* PTX for XY), else ``incompatible`` for that GPU, named;
* ``ok`` when at least one GPU can run it (the others are named in the message and
  ``details["devices"]``), ``incompatible`` when none can, ``unknown`` when it cannot tell.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

STATE_OK = "ok"
STATE_INCOMPATIBLE = "incompatible"
STATE_UNKNOWN = "unknown"
STATE_NOT_APPLICABLE = "not_applicable"

#: NVIDIA's minimum Linux x86_64 driver for each CUDA toolkit (its GA release), from
#: "CUDA Toolkit and Corresponding Driver Versions" in the CUDA Toolkit release notes
#: (https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/, table 3).
CUDA_MIN_DRIVER: dict[tuple[int, int], str] = {
    (11, 0): "450.51.05",
    (11, 1): "455.23",
    (11, 2): "460.27.03",
    (11, 3): "465.19.01",
    (11, 4): "470.42.01",
    (11, 5): "495.29.05",
    (11, 6): "510.39.01",
    (11, 7): "515.43.04",
    (11, 8): "520.61.05",
    (12, 0): "525.60.13",
    (12, 1): "530.30.02",
    (12, 2): "535.54.03",
    (12, 3): "545.23.06",
    (12, 4): "550.54.14",
    (12, 5): "555.42.02",
    (12, 6): "560.28.03",
    (12, 8): "570.26",
    (12, 9): "575.51.03",
    (13, 0): "580.65.06",
}
#: The minimum Linux driver for CUDA minor-version compatibility within a major (same
#: release notes, table 2): any 12.x build on a driver >= 525.60.13, except PTX JIT.
MINOR_COMPAT_MIN_DRIVER: dict[int, str] = {11: "450.80.02", 12: "525.60.13"}


@dataclass(frozen=True)
class Compatibility:
    """A verdict: ``state`` (ok, incompatible, unknown, not_applicable), a message that
    says what to do, and the facts compared (``details``)."""

    state: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.state in (STATE_OK, STATE_NOT_APPLICABLE)

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "message": self.message, "details": self.details}


# -- parsing ------------------------------------------------------------------------------


def cuda_version(text: Any) -> tuple[int, int] | None:
    """``"12.5.1"`` / ``"12.3"`` / ``"12"`` / Windows' ``"64_112"`` → (12, 5) …; None."""
    if text is None:
        return None
    value = str(text).strip()
    windows = re.fullmatch(r"64_(\d+)(\d)", value)  # cudart64_112.dll: 11.2
    if windows:
        return int(windows.group(1)), int(windows.group(2))
    match = re.fullmatch(r"(\d+)(?:\.(\d+))?(?:\.\d+)*", value)
    if not match:
        return None
    return int(match.group(1)), int(match.group(2) or 0)


def _version_key(text: str) -> tuple[int, ...] | None:
    """A driver version ("535.54.03") as a comparable tuple; None if not one."""
    parts = str(text).strip().split(".")
    if not all(part.isdigit() for part in parts):
        return None
    return tuple(int(part) for part in parts)


def _capability(text: Any) -> tuple[int, int] | None:
    """NVML's/TF's "8.0" → (8, 0)."""
    match = re.fullmatch(r"(\d+)\.(\d+)", str(text).strip()) if text is not None else None
    return (int(match.group(1)), int(match.group(2))) if match else None


@dataclass(frozen=True)
class Arch:
    """One entry of ``cuda_compute_capabilities``: SASS and/or PTX for an architecture."""

    name: str
    cc: tuple[int, int]
    sass: bool
    ptx: bool
    #: "a": arch-specific (only that exact GPU), "f": family (same major), "" otherwise.
    suffix: str = ""

    def runs_natively_on(self, cc: tuple[int, int]) -> bool:
        if not self.sass:
            return False
        if self.suffix == "a":
            return cc == self.cc
        return cc[0] == self.cc[0] and cc[1] >= self.cc[1]

    def jit_target_for(self, cc: tuple[int, int]) -> bool:
        if not self.ptx:
            return False
        if self.suffix == "a":
            return cc == self.cc
        if self.suffix == "f":
            return cc[0] == self.cc[0] and cc[1] >= self.cc[1]
        return cc >= self.cc


def parse_architectures(entries: Any) -> tuple[list[Arch], list[str]]:
    """TF's ``cuda_compute_capabilities`` → (architectures, entries not understood).

    ``sm_XY`` is SASS only; ``compute_XY`` is SASS and PTX (TensorFlow's
    ``cuda_configure.bzl``); an all-``"X.Y"`` list means SASS for each and PTX for the
    highest, as TensorFlow's configure maps it.
    """
    if isinstance(entries, str):
        entries = entries.split(",")
    items = [str(e).strip() for e in (entries or []) if str(e).strip()]
    if items and all(_capability(e) for e in items):
        ordered = sorted(items, key=lambda e: _capability(e) or (0, 0))
        items = [f"sm_{e.replace('.', '')}" for e in ordered[:-1]]
        items.append(f"compute_{ordered[-1].replace('.', '')}")
    archs: list[Arch] = []
    unknown: list[str] = []
    for item in items:
        match = re.fullmatch(r"(sm|compute)_(\d+)(\d)([af]?)", item)
        if not match:
            unknown.append(item)
            continue
        kind, major, minor, suffix = match.groups()
        cc = (int(major), int(minor))
        archs.append(Arch(item, cc, sass=True, ptx=kind == "compute", suffix=suffix))
    return archs, unknown


# -- the check ----------------------------------------------------------------------------


def _fmt(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def _probe_hint(env_id: str, refresh: bool = False) -> str:
    return (
        f"run `jupyter tfenv probe {env_id}{' --refresh' if refresh else ''}` (or Probe in "
        "the panel's environment details), then check again"
    )


def driver_advice(build: tuple[int, int]) -> str:
    """What driver a CUDA ``build`` needs, from NVIDIA's table."""
    exact = CUDA_MIN_DRIVER.get(build)
    floor = MINOR_COMPAT_MIN_DRIVER.get(build[0])
    parts = []
    if exact:
        parts.append(f"an NVIDIA driver >= {exact} (CUDA {_fmt(build)})")
    else:
        parts.append(f"an NVIDIA driver that supports CUDA {_fmt(build)}")
    if floor and build[1] > 0:
        parts.append(
            f"at least >= {floor} (CUDA {build[0]}.0), enough through CUDA minor-version "
            "compatibility when every GPU has native code in the build"
        )
    return "; ".join(parts)


def _device_name(gpu: dict[str, Any]) -> str:
    name = gpu.get("name") or "GPU"
    return f"GPU {gpu.get('index', '?')} ({name}, compute capability " + (
        f"{gpu.get('compute_capability')})" if gpu.get("compute_capability") else "unknown)"
    )


def _device_verdict(
    gpu: dict[str, Any], archs: list[Arch], driver_is_older: bool
) -> dict[str, Any]:
    """One GPU: ok (native or PTX JIT), incompatible, or unknown; with the reason."""
    entry = {
        "index": gpu.get("index"),
        "uuid": gpu.get("uuid"),
        "name": gpu.get("name"),
        "compute_capability": gpu.get("compute_capability"),
    }
    cc = _capability(gpu.get("compute_capability"))
    if cc is None:
        why = gpu.get("error") or "NVML did not report its compute capability"
        return {**entry, "state": STATE_UNKNOWN, "code": None, "reason": why}
    if any(a.runs_natively_on(cc) for a in archs):
        native = [a.name for a in archs if a.runs_natively_on(cc)]
        return {**entry, "state": STATE_OK, "code": "sass", "reason": f"native code ({native[-1]})"}
    ptx = [a.name for a in archs if a.jit_target_for(cc)]
    if ptx:
        if driver_is_older:
            return {
                **entry,
                "state": STATE_INCOMPATIBLE,
                "code": "ptx",
                "reason": f"it has no native code in the build, only PTX ({ptx[-1]}) that the "
                "driver must JIT-compile, and a driver older than the build's CUDA cannot "
                "read a newer toolkit's PTX",
            }
        return {
            **entry,
            "state": STATE_OK,
            "code": "ptx",
            "reason": f"PTX ({ptx[-1]}) JIT-compiled by the driver (the first start of a "
            "kernel can take minutes)",
        }
    oldest = min(archs, key=lambda a: a.cc)
    if cc < oldest.cc:
        why = (
            f"it is older than every architecture the build has code for (the oldest: "
            f"{oldest.name}, compute capability {_fmt(oldest.cc)})"
        )
    else:
        why = (
            f"the build has no native code for compute capability {_fmt(cc)} and no PTX at or "
            f"below it ({', '.join(a.name for a in archs)})"
        )
    return {**entry, "state": STATE_INCOMPATIBLE, "code": None, "reason": why}


def _unknown(message: str, details: dict[str, Any]) -> Compatibility:
    return Compatibility(STATE_UNKNOWN, message, details)


def check_compatibility(
    probe_facts: dict[str, Any] | None,
    host_facts: dict[str, Any] | None,
    *,
    env_id: str | None = None,
    wants_gpu: bool | None = None,
    devices: list[str] | None = None,
) -> Compatibility:
    """The verdict for one environment on this host.

    ``probe_facts``: the probe's answer (``probe_image``/``cached_probe``), None when the
    image was never probed. ``host_facts``: ``gpu_overview()``'s answer (``state``,
    ``message``, ``driver_version``, ``cuda_driver_version``, ``gpus`` with
    ``compute_capability``; ``place``: what the messages call it, "host" by default), None
    when nobody asked. ``wants_gpu``: whether the catalog
    gives the environment GPUs (None: as the probe says). ``devices``: the catalog's
    explicit GPU ids (indices or UUIDs, ``gpus: ["2"]``): only those GPUs are judged.
    """
    probe = probe_facts or {}
    env_id = env_id or probe.get("environment") or "<environment>"
    gpu_state = (probe.get("gpu_state") or {}).get("state")
    if wants_gpu is False or (wants_gpu is None and gpu_state == "not_requested"):
        return Compatibility(
            STATE_NOT_APPLICABLE, f"'{env_id}' is a CPU environment: no GPU to check.", {}
        )
    details: dict[str, Any] = {"environment": env_id}
    if probe_facts is None:
        return _unknown(
            f"'{env_id}' has not been probed on this image, so the CUDA it was built for is "
            f"unknown: {_probe_hint(env_id)}.",
            {**details, "missing": "probe"},
        )
    if not probe.get("tensorflow"):
        why = (probe.get("errors") or {}).get("tensorflow") or "TensorFlow is not in the image"
        return _unknown(
            f"TensorFlow could not be imported in '{env_id}'s image ({why}), so its CUDA build "
            "is unknown.",
            {**details, "missing": "tensorflow"},
        )
    build = probe.get("build")
    if not isinstance(build, dict):
        why = (probe.get("errors") or {}).get("build") or "the probe has no build info"
        return _unknown(
            f"TensorFlow {probe['tensorflow']} in '{env_id}' did not say how it was built "
            f"({why}), so its CUDA is unknown.",
            {**details, "missing": "build"},
        )
    details["build"] = {
        "cuda_version": build.get("cuda_version"),
        "cudnn_version": build.get("cudnn_version"),
        "cuda_compute_capabilities": build.get("cuda_compute_capabilities"),
    }
    if build.get("is_rocm_build"):
        return _unknown(
            f"TensorFlow in '{env_id}' is a ROCm (AMD) build; the host's facts come from "
            "NVIDIA's NVML, so this check cannot tell.",
            {**details, "missing": "cuda_build"},
        )
    if build.get("is_cuda_build") is False:
        return Compatibility(
            STATE_INCOMPATIBLE,
            f"TensorFlow {probe['tensorflow']} in '{env_id}' is a CPU-only build "
            "(is_cuda_build: false): it never uses a GPU. Use a GPU image (such as "
            "tensorflow/tensorflow:X.Y.Z-gpu-jupyter), or make the entry a CPU environment "
            "(gpus: none).",
            {**details, "reason": "cpu_only_build"},
        )
    build_cuda = cuda_version(build.get("cuda_version"))
    if build_cuda is None:
        return _unknown(
            f"The probe of '{env_id}' does not say which CUDA TensorFlow was built for "
            f"(cuda_version: {build.get('cuda_version')!r}).",
            {**details, "missing": "cuda_version"},
        )
    host = host_facts or {}
    # What the facts describe, in the messages: a Docker "host", a Kubernetes "node".
    place = str(host.get("place") or "host")
    if host.get("state") != "ok":
        why = host.get("message") or "nobody asked NVML"
        return _unknown(
            f"Cannot read the host's driver, so whether CUDA {build.get('cuda_version')} runs "
            f"here is unknown: {why}",
            {**details, "missing": "host", "host_state": host.get("state")},
        )
    driver = host.get("driver_version")
    host_cuda = cuda_version(host.get("cuda_driver_version"))
    details["host"] = {
        "driver_version": driver,
        "cuda_driver_version": host_cuda and _fmt(host_cuda),
    }
    if host_cuda is None:
        return _unknown(
            f"NVML did not report the CUDA version of the host's driver ({driver or '?'}), so "
            f"whether CUDA {_fmt(build_cuda)} runs here is unknown.",
            {**details, "missing": "cuda_driver_version"},
        )
    driver_text = f"the {place}'s driver {driver or '?'} supports CUDA up to {_fmt(host_cuda)}"
    other_image = f"or use an image built for CUDA {_fmt(host_cuda)} or older"
    driver_is_older = host_cuda < build_cuda
    minor_compat = False
    if driver_is_older:
        floor = MINOR_COMPAT_MIN_DRIVER.get(build_cuda[0])
        below_floor = (
            floor is not None
            and driver is not None
            and (_version_key(driver) or ()) < (_version_key(floor) or ())
        )
        if host_cuda[0] != build_cuda[0] or floor is None or below_floor:
            return Compatibility(
                STATE_INCOMPATIBLE,
                f"TensorFlow in '{env_id}' was built for CUDA {_fmt(build_cuda)}, but "
                f"{driver_text}. Install {driver_advice(build_cuda)}, {other_image}.",
                {**details, "reason": "driver_too_old"},
            )
        minor_compat = True
    details["minor_version_compatibility"] = minor_compat
    archs, not_understood = parse_architectures(build.get("cuda_compute_capabilities"))
    if not archs:
        listed = build.get("cuda_compute_capabilities")
        why = (
            f"does not understand its architectures {not_understood}"
            if listed
            else "does not list the architectures it has code for (a probe from an older "
            "jupyter_tfenv)"
        )
        supports = (
            f"The driver (CUDA {_fmt(host_cuda)}) runs the CUDA {_fmt(build_cuda)} of "
            f"'{env_id}' only through minor-version compatibility, for GPUs with native code"
            if minor_compat
            else f"The driver supports the CUDA {_fmt(build_cuda)} of '{env_id}'"
        )
        return _unknown(
            f"{supports}, but the probe {why}, so whether this {place}'s GPUs can run it is "
            "unknown: "
            f"{_probe_hint(env_id, refresh=True)}.",
            {**details, "missing": "cuda_compute_capabilities"},
        )
    gpus = list(host.get("gpus") or [])
    if devices is not None:
        wanted = {str(d) for d in devices}
        gpus = [g for g in gpus if str(g.get("index")) in wanted or g.get("uuid") in wanted]
        if not gpus:
            return _unknown(
                f"'{env_id}' asks for GPU {', '.join(sorted(wanted))}, which NVML does not "
                "list on this host (a MIG device, or a GPU that is gone), so whether it runs "
                "there is unknown.",
                {**details, "missing": "device"},
            )
    devices_seen = [_device_verdict(g, archs, driver_is_older) for g in gpus]
    details["devices"] = devices_seen
    usable = [d for d in devices_seen if d["state"] == STATE_OK]
    bad = [d for d in devices_seen if d["state"] == STATE_INCOMPATIBLE]
    unsure = [d for d in devices_seen if d["state"] == STATE_UNKNOWN]
    details["usable_devices"] = [d["index"] for d in usable]

    def named(items: list[dict[str, Any]]) -> str:
        return "; ".join(f"{_device_name(d)}: {d['reason']}" for d in items)

    built = f"CUDA {_fmt(build_cuda)}, " + ", ".join(a.name for a in archs)
    if not usable:
        if unsure:
            return _unknown(
                f"Cannot tell whether this {place}'s GPUs can run '{env_id}' (built for {built}): "
                f"{named(unsure)}.",
                details,
            )
        advice = (
            f"Install {driver_advice(build_cuda)}, {other_image}."
            if minor_compat and all(d["code"] == "ptx" for d in bad)
            else "Use an image whose TensorFlow was built for these GPUs' architectures "
            f"(an older TensorFlow for older GPUs), or run it on a {place} with newer GPUs."
        )
        return Compatibility(
            STATE_INCOMPATIBLE,
            f"No GPU of this {place} can run TensorFlow in '{env_id}' (built for {built}): "
            f"{named(bad)}. {advice}",
            {**details, "reason": "no_usable_gpu"},
        )
    message = (
        f"'{env_id}' (built for {built}) runs on "
        + ", ".join(_device_name(d) for d in usable)
        + f"; {driver_text}."
    )
    if minor_compat:
        message += (
            f" Through CUDA minor-version compatibility ({_fmt(host_cuda)} < "
            f"{_fmt(build_cuda)}): TensorFlow's native kernels run; code JIT-compiled from "
            f"PTX may not. For full support install {driver_advice(build_cuda)}."
        )
    if any(d["code"] == "ptx" for d in usable):
        message += " Some GPUs run PTX JIT-compiled by the driver: the first start is slow."
    if bad or unsure:
        message += f" Not on: {named(bad + unsure)}."
    return Compatibility(STATE_OK, message, details)
