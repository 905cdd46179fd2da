"""Describe the Python and TensorFlow of a jupyter_tfenv environment's image.

Run by the image's own python in a throwaway container (never in a user's kernel:
importing TensorFlow there would take GPU memory), mounted read-only at
/opt/tfenv/probe.py. Standard library only, and Python 3.6 syntax, because it runs in
images we do not control.

It prints ONE JSON object on stdout: python, python_abi, os, ipykernel, zmq (pyzmq,
libzmq, curve), packages (every
distribution it sees, name → version), numpy, tensorflow, keras, build (cuda_version,
cudnn_version, is_*_build and, on GPU builds, cuda_compute_capabilities), gpus, errors
({part: message}) and seconds ({part: seconds}).
Every part is wrapped, so a broken part becomes an entry of ``errors``, never a
traceback instead of the JSON.

The native parts (NumPy, TensorFlow, Keras, build info, GPUs) run in a child process of
the same interpreter: a TensorFlow wheel that needs AVX on a CPU without it, or a CUDA
library that segfaults, kills that process with a signal, which no ``try`` can catch.
The child reports each part as soon as it has it, one JSON line each, so the parent
still knows everything up to the part that crashed, and names that part.
"""

import contextlib
import importlib
import importlib.util
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time

CHILD_FLAG = "--native-parts"
NATIVE_PARTS = ("numpy", "tensorflow", "keras", "build", "gpus")
BUILD_KEYS = (
    "cuda_version",
    "cudnn_version",
    "is_cuda_build",
    "is_rocm_build",
    "is_tensorrt_build",
)
PART_TIMEOUT = 600


def describe(exc):
    """A one-line message for an exception; ImportErrors say it in Python's own words."""
    if isinstance(exc, ImportError):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"


def dist_version(name):
    """A distribution's version without importing it; None when unknown."""
    try:
        from importlib import metadata  # Python 3.8+
    except ImportError:
        return None
    try:
        return metadata.version(name)
    except Exception:
        return None


def installed_packages():
    """Every distribution the interpreter sees (its sys.path, PYTHONPATH included):
    canonical name → version; the first one on sys.path wins, as it does for import.
    None before Python 3.8 (no importlib.metadata)."""
    try:
        from importlib import metadata  # Python 3.8+
    except ImportError:
        return None
    found = {}  # type: dict
    for dist in metadata.distributions():
        name = version = None
        with contextlib.suppress(Exception):  # a broken METADATA file: skip that one
            name, version = dist.metadata["Name"], dist.version
        if not name:
            continue
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key not in found:
            found[key] = version
    return dict(sorted(found.items()))


def python_abi():
    impl = sys.implementation.name
    prefix = {"cpython": "cp", "pypy": "pp"}.get(impl, impl)
    return f"{prefix}{sys.version_info[0]}{sys.version_info[1]}-{platform.machine()}"


def os_name():
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            with open(path) as handle:
                lines = handle.read().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip("\"'")
        return None
    return None


def ipykernel_version():
    if importlib.util.find_spec("ipykernel") is None:
        return None
    version = dist_version("ipykernel")
    if version is None:
        import ipykernel

        version = getattr(ipykernel, "__version__", "unknown")
    return version


def zmq_facts():
    """pyzmq, its libzmq and whether it has CurveZMQ (what an encrypted kernel pod needs,
    docs/kubernetes.md); None without pyzmq."""
    if importlib.util.find_spec("zmq") is None:
        return None
    import zmq

    return {"pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(), "curve": bool(zmq.has("curve"))}


# --------------------------------------------------------------------------- child


def _numpy():
    import numpy

    return numpy.__version__


def _tensorflow():
    import tensorflow as tf

    return tf.__version__


def _keras():
    try:
        import keras
    except ImportError as exc:
        # Before Keras was its own package (or without it): the one inside TensorFlow.
        try:
            import tensorflow as tf

            return tf.keras.__version__
        except Exception:
            raise exc from None
    return keras.__version__


def _build():
    import tensorflow as tf

    info = dict(tf.sysconfig.get_build_info())
    build = {}  # type: dict
    for key in BUILD_KEYS:
        value = info.get(key)
        if key.startswith("is_"):
            value = bool(value)
        elif value is not None:
            value = str(value)
        build[key] = value
    # GPU builds only (a CPU wheel's build info has no such key): the architectures the
    # CUDA code was compiled for, e.g. ["sm_60", "sm_70", "sm_80", "sm_89", "compute_90"]
    # ('sm_XY': SASS only; 'compute_XY': SASS and PTX). jupyter_tfenv.kernels.compat
    # compares them with the host's GPUs.
    capabilities = info.get("cuda_compute_capabilities")
    if capabilities:
        if isinstance(capabilities, str):
            capabilities = capabilities.split(",")
        build["cuda_compute_capabilities"] = [str(c).strip() for c in capabilities]
    return build


def _gpus():
    import tensorflow as tf

    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        entry = {"name": None, "device": device.name, "compute_capability": None}
        try:
            details = tf.config.experimental.get_device_details(device)
        except Exception:
            details = {}
        entry["name"] = details.get("device_name")
        capability = details.get("compute_capability")
        if capability:
            entry["compute_capability"] = f"{int(capability[0])}.{int(capability[1])}"
        gpus.append(entry)
    return gpus


CHILD_PARTS = (
    ("numpy", _numpy),
    ("tensorflow", _tensorflow),
    ("keras", _keras),
    ("build", _build),
    ("gpus", _gpus),
)


def child_main():
    """Report each native part as one JSON line on the real stdout, as soon as it is known."""
    out = _private_stdout()
    have_tf = True
    for part, func in CHILD_PARTS:
        if part in ("build", "gpus") and not have_tf:
            continue
        line = {"part": part}  # type: dict
        # Announce the part first: if it kills the process, the parent knows which one did.
        _emit(out, {"part": part, "started": True})
        started = time.time()
        try:
            line["value"] = func()
        except BaseException as exc:  # SystemExit from a broken package, too
            line["error"] = describe(exc)
            if part == "tensorflow":
                have_tf = False
        line["seconds"] = round(time.time() - started, 3)
        _emit(out, line)


_OUT = []  # type: list


def _private_stdout():
    """The real stdout for our JSON; anything else written to fd 1 goes to stderr instead.

    Native libraries print to fd 1 directly, which would corrupt the JSON.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    out = os.fdopen(saved, "w")
    _OUT.append(out)
    return out


def _emit(out, obj):
    out.write(json.dumps(obj) + "\n")
    out.flush()


def run_child(result):
    """Run the native parts in a child process; merge what it reported into ``result``."""
    started = time.time()
    lines = []
    error = None
    try:
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), CHILD_FLAG],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        try:
            raw, _ = proc.communicate(timeout=PART_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            raw, _ = proc.communicate()
            error = f"did not finish within {PART_TIMEOUT} s"
        for raw_line in raw.decode("utf-8", "replace").splitlines():
            text = raw_line.strip()
            if text.startswith("{"):
                with contextlib.suppress(ValueError):
                    lines.append(json.loads(text))
        code = proc.returncode
        if error is None and code:
            if code < 0:
                try:
                    name = signal.Signals(-code).name
                except ValueError:
                    name = f"signal {-code}"
                error = f"the Python process was killed by {name}"
                if name == "SIGILL":
                    error += (
                        " (illegal instruction: this build needs CPU instructions, such as"
                        " AVX, that this CPU lacks)"
                    )
            else:
                error = f"the Python process exited with code {code}"
    except Exception as exc:
        error = describe(exc)
    announced = None
    for line in lines:
        part = line.get("part")
        if part not in NATIVE_PARTS:
            continue
        if line.get("started"):
            announced = part
            continue
        announced = None
        if "error" in line:
            result["errors"][part] = line["error"]
        else:
            result[part] = line.get("value")
        result["seconds"][part] = line.get("seconds")
    if error is not None:
        # The part that was running when the child died (or every part if none ran).
        culprit = announced or ("numpy" if not lines else None)
        if culprit:
            result["errors"][culprit] = f"{error} while importing {culprit}"
        else:
            result["errors"]["probe"] = error
    result["seconds"]["native_total"] = round(time.time() - started, 3)


def in_process(result):
    """Fallback when no child can be started (no sys.executable): same parts, in-process."""
    for part, func in CHILD_PARTS:
        if part in ("build", "gpus") and result.get("tensorflow") is None:
            continue
        started = time.time()
        try:
            result[part] = func()
        except Exception as exc:
            result["errors"][part] = describe(exc)
        result["seconds"][part] = round(time.time() - started, 3)


# --------------------------------------------------------------------------- parent


def main():
    started = time.time()
    # Logging noise from TensorFlow's C++ side goes to stderr; keep it to warnings+.
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    # sys.path[0] is this script's folder; nothing should be imported from it.
    if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(
        os.path.abspath(__file__)
    ):
        del sys.path[0]
    if len(sys.argv) > 1 and sys.argv[1] == CHILD_FLAG:
        child_main()
        return
    out = _private_stdout()
    result = {  # type: dict
        "python": None,
        "python_abi": None,
        "python_executable": sys.executable or None,
        "os": None,
        "ipykernel": None,
        "zmq": None,
        "numpy": None,
        "tensorflow": None,
        "keras": None,
        "build": None,
        "gpus": None,
        "packages": None,
        "errors": {},
        "seconds": {},
    }
    for part, func in (
        ("python", platform.python_version),
        ("python_abi", python_abi),
        ("os", os_name),
        ("ipykernel", ipykernel_version),
        ("zmq", zmq_facts),
        ("packages", installed_packages),
    ):
        part_started = time.time()
        try:
            result[part] = func()
        except Exception as exc:
            result["errors"][part] = describe(exc)
        result["seconds"][part] = round(time.time() - part_started, 3)
    try:
        if sys.executable and os.path.exists(sys.executable):
            run_child(result)
        else:
            in_process(result)
    except Exception as exc:
        result["errors"]["probe"] = describe(exc)
    result["seconds"]["total"] = round(time.time() - started, 3)
    _emit(out, result)


if __name__ == "__main__":
    try:
        main()
    except BaseException as exc:  # the JSON must come out, whatever happened
        _emit(_OUT[0] if _OUT else sys.__stdout__, {"errors": {"probe": describe(exc)}})
