"""A checker of the restricted Pod Security Standard, and of requests == limits.

:func:`check_pod` returns the violations of a Pod (a dict, as submitted) against the
rules of the Kubernetes "restricted" profile (which includes "baseline"), as the
Pod Security Standards page lists them, plus one rule of the scheduler's: extended
resources (``nvidia.com/gpu``, hugepages) must have requests equal to limits. An empty
list means the pod would be admitted by ``pod-security.kubernetes.io/enforce=restricted``
as far as these rules go. A backend runs it before it submits a pod, so that a refusal
names the field here rather than in an admission error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

#: Volume types the restricted profile allows.
ALLOWED_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
#: Capabilities the baseline profile lets a container add; restricted: NET_BIND_SERVICE.
BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
_ALLOWED_TEXT = ", ".join(sorted(ALLOWED_VOLUME_TYPES))
RESTRICTED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
SELINUX_TYPES = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
SECCOMP_TYPES = frozenset({"RuntimeDefault", "Localhost"})
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
#: Resources the kubelet itself manages; every other name is an extended resource.
_NATIVE_RESOURCES = frozenset({"cpu", "memory", "ephemeral-storage", "storage"})
_CONTAINER_KINDS = ("initContainers", "containers", "ephemeralContainers")

_QUANTITY_RE = re.compile(r"^([+-]?[0-9.]+)(([KMGTPE]i)|[mkMGTPE]|[eE][+-]?[0-9]+)?$")
_SUFFIXES = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


@dataclass(frozen=True)
class Violation:
    """One broken rule: its name (as the PSS page calls it), the field, and why."""

    rule: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} ({self.rule})"


def parse_quantity(value: Any) -> Decimal:
    """A Kubernetes quantity (``"2"``, ``"500m"``, ``"8Gi"``, ``"1e3"``, 2) as a number."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a quantity")
    if isinstance(value, int | float):
        return Decimal(str(value))
    match = _QUANTITY_RE.match(str(value).strip())
    if not match:
        raise ValueError(f"{value!r} is not a quantity")
    try:
        number = Decimal(match.group(1))
    except InvalidOperation as err:
        raise ValueError(f"{value!r} is not a quantity") from err
    suffix = match.group(2) or ""
    if suffix[:1] in ("e", "E"):
        return number * Decimal(10) ** int(suffix[1:])
    return number * _SUFFIXES[suffix]


def is_extended_resource(name: str) -> bool:
    """``nvidia.com/gpu`` and hugepages yes; cpu, memory, ephemeral-storage no."""
    if name in _NATIVE_RESOURCES:
        return False
    if name.startswith("hugepages-"):
        return True
    prefix = name.split("/", 1)[0] if "/" in name else ""
    return bool(prefix) and not (prefix == "kubernetes.io" or prefix.endswith(".kubernetes.io"))


def _containers(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for kind in _CONTAINER_KINDS:
        for index, container in enumerate(spec.get(kind) or []):
            yield f"spec.{kind}[{index}]", container


def _context(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("securityContext") or {}


def check_pod(pod: Mapping[str, Any]) -> list[Violation]:
    """The restricted-profile and requests == limits violations of ``pod`` (a Pod dict)."""
    spec = pod.get("spec") or {}
    found: list[Violation] = []
    found += _host_namespaces(spec)
    found += _host_process(spec)
    found += _volumes(spec)
    found += _apparmor(pod, spec)
    found += _selinux(spec)
    found += _sysctls(spec)
    found += _seccomp(spec)
    found += _run_as(spec)
    for path, container in _containers(spec):
        found += _container(path, container)
    found += _extended_resources(spec)
    return found


def _host_namespaces(spec: Mapping[str, Any]) -> list[Violation]:
    return [
        Violation("Host Namespaces", f"spec.{key}", f"{key} must be unset or false")
        for key in ("hostNetwork", "hostPID", "hostIPC")
        if spec.get(key)
    ]


def _host_process(spec: Mapping[str, Any]) -> list[Violation]:
    places = [("spec.securityContext", _context(spec))]
    places += [(f"{p}.securityContext", _context(c)) for p, c in _containers(spec)]
    return [
        Violation(
            "HostProcess",
            f"{path}.windowsOptions.hostProcess",
            "Windows HostProcess pods are refused",
        )
        for path, ctx in places
        if (ctx.get("windowsOptions") or {}).get("hostProcess")
    ]


def _volumes(spec: Mapping[str, Any]) -> list[Violation]:
    found = []
    for index, volume in enumerate(spec.get("volumes") or []):
        kinds = [k for k in volume if k != "name"]
        for kind in kinds:
            if kind == "hostPath":
                found.append(
                    Violation(
                        "HostPath Volumes",
                        f"spec.volumes[{index}].hostPath",
                        "hostPath volumes are refused",
                    )
                )
            elif kind not in ALLOWED_VOLUME_TYPES:
                found.append(
                    Violation(
                        "Volume Types",
                        f"spec.volumes[{index}].{kind}",
                        f"volume type {kind} is not allowed (only {_ALLOWED_TEXT})",
                    )
                )
    return found


def _apparmor(pod: Mapping[str, Any], spec: Mapping[str, Any]) -> list[Violation]:
    found = []
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    for key, value in annotations.items():
        if (
            key.startswith(APPARMOR_ANNOTATION)
            and value not in ("runtime/default",)
            and not str(value).startswith("localhost/")
        ):
            found.append(
                Violation(
                    "AppArmor",
                    f"metadata.annotations[{key}]",
                    f"AppArmor profile {value!r} is refused",
                )
            )
    places = [("spec.securityContext", _context(spec))]
    places += [(f"{p}.securityContext", _context(c)) for p, c in _containers(spec)]
    for path, ctx in places:
        kind = (ctx.get("appArmorProfile") or {}).get("type")
        if kind is not None and kind not in ("RuntimeDefault", "Localhost"):
            found.append(
                Violation("AppArmor", f"{path}.appArmorProfile.type", f"{kind} is refused")
            )
    return found


def _selinux(spec: Mapping[str, Any]) -> list[Violation]:
    found = []
    places = [("spec.securityContext", _context(spec))]
    places += [(f"{p}.securityContext", _context(c)) for p, c in _containers(spec)]
    for path, ctx in places:
        options = ctx.get("seLinuxOptions") or {}
        if options.get("type", "") not in SELINUX_TYPES:
            found.append(
                Violation(
                    "SELinux",
                    f"{path}.seLinuxOptions.type",
                    f"SELinux type {options['type']!r} is refused",
                )
            )
        for key in ("user", "role"):
            if options.get(key):
                found.append(
                    Violation("SELinux", f"{path}.seLinuxOptions.{key}", f"{key} must be unset")
                )
    return found


def _sysctls(spec: Mapping[str, Any]) -> list[Violation]:
    return [
        Violation(
            "Sysctls", f"spec.securityContext.sysctls[{i}]", f"sysctl {s.get('name')!r} is not safe"
        )
        for i, s in enumerate(_context(spec).get("sysctls") or [])
        if s.get("name") not in SAFE_SYSCTLS
    ]


def _seccomp(spec: Mapping[str, Any]) -> list[Violation]:
    found = []
    pod_type = (_context(spec).get("seccompProfile") or {}).get("type")
    if pod_type is not None and pod_type not in SECCOMP_TYPES:
        found.append(
            Violation(
                "Seccomp", "spec.securityContext.seccompProfile.type", f"{pod_type} is refused"
            )
        )
    for path, container in _containers(spec):
        kind = (_context(container).get("seccompProfile") or {}).get("type")
        if kind is not None and kind not in SECCOMP_TYPES:
            found.append(
                Violation(
                    "Seccomp", f"{path}.securityContext.seccompProfile.type", f"{kind} is refused"
                )
            )
        elif kind is None and pod_type not in SECCOMP_TYPES:
            found.append(
                Violation(
                    "Seccomp",
                    f"{path}.securityContext.seccompProfile",
                    "must be RuntimeDefault or Localhost (here or in the pod's securityContext)",
                )
            )
    return found


def _run_as(spec: Mapping[str, Any]) -> list[Violation]:
    found = []
    pod_ctx = _context(spec)
    if pod_ctx.get("runAsNonRoot") is False:
        found.append(
            Violation(
                "Running as Non-root", "spec.securityContext.runAsNonRoot", "must not be false"
            )
        )
    if pod_ctx.get("runAsUser") == 0:
        found.append(
            Violation("Running as Non-root user", "spec.securityContext.runAsUser", "must not be 0")
        )
    for path, container in _containers(spec):
        ctx = _context(container)
        non_root = ctx.get("runAsNonRoot")
        if non_root is False:
            found.append(
                Violation(
                    "Running as Non-root",
                    f"{path}.securityContext.runAsNonRoot",
                    "must not be false",
                )
            )
        elif non_root is None and pod_ctx.get("runAsNonRoot") is not True:
            found.append(
                Violation(
                    "Running as Non-root",
                    f"{path}.securityContext.runAsNonRoot",
                    "must be true (here or in the pod's securityContext)",
                )
            )
        if ctx.get("runAsUser") == 0:
            found.append(
                Violation(
                    "Running as Non-root user", f"{path}.securityContext.runAsUser", "must not be 0"
                )
            )
    return found


def _container(path: str, container: Mapping[str, Any]) -> list[Violation]:
    found = []
    ctx = _context(container)
    where = f"{path}.securityContext"
    if ctx.get("privileged"):
        found.append(
            Violation("Privileged Containers", f"{where}.privileged", "must be unset or false")
        )
    if ctx.get("allowPrivilegeEscalation") is not False:
        found.append(
            Violation("Privilege Escalation", f"{where}.allowPrivilegeEscalation", "must be false")
        )
    if ctx.get("procMount", "Default") != "Default":
        found.append(
            Violation("/proc Mount Type", f"{where}.procMount", "must be Default or unset")
        )
    caps = ctx.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        found.append(Violation("Capabilities", f"{where}.capabilities.drop", "must include ALL"))
    for cap in caps.get("add") or []:
        if cap not in RESTRICTED_CAPABILITIES:
            rule = "Capabilities" if cap in BASELINE_CAPABILITIES else "Capabilities (baseline)"
            found.append(Violation(rule, f"{where}.capabilities.add", f"adding {cap} is refused"))
    for index, port in enumerate(container.get("ports") or []):
        if port.get("hostPort"):
            found.append(
                Violation("Host Ports", f"{path}.ports[{index}].hostPort", "must be unset or 0")
            )
    return found


def _extended_resources(spec: Mapping[str, Any]) -> list[Violation]:
    found = []
    for path, container in _containers(spec):
        resources = container.get("resources") or {}
        limits = resources.get("limits") or {}
        requests = resources.get("requests") or {}
        for name in sorted({*limits, *requests}):
            if not is_extended_resource(name):
                continue
            where = f"{path}.resources"
            if name not in limits or name not in requests:
                found.append(
                    Violation(
                        "Extended Resources",
                        f"{where}.{'limits' if name not in limits else 'requests'}[{name}]",
                        f"{name} must be in both requests and limits, equal",
                    )
                )
                continue
            try:
                equal = parse_quantity(limits[name]) == parse_quantity(requests[name])
            except ValueError as err:
                found.append(Violation("Extended Resources", f"{where}[{name}]", str(err)))
                continue
            if not equal:
                found.append(
                    Violation(
                        "Extended Resources",
                        f"{where}.requests[{name}]",
                        f"requests {requests[name]!r} != limits {limits[name]!r}",
                    )
                )
    return found
