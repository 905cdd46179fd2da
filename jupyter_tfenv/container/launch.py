"""Start ipykernel inside a jupyter_tfenv kernel container.

Mounted read-only at /opt/tfenv/launch.py and run by the image's own python. Standard
library only, and Python 3.6 syntax, because it runs in images we do not control.

If the image has ipykernel (the -jupyter images), that one runs. If not, and a kernel
runtime for this Python ABI was built on the host (``jupyter tfenv runtime build``) and
mounted at /opt/tfenv/runtimes, its packages are appended to sys.path, after the image's
own, so that the image's TensorFlow, NumPy… still win. Otherwise the launcher says so on
stderr with a marker the server turns into an actionable message. It never installs
anything.
"""

import importlib
import importlib.util
import os
import platform
import sys

RUNTIMES = "/opt/tfenv/runtimes"
MARK = "TFENV-NO-IPYKERNEL"


def runtime_tag():
    return "cp%d%d-%s" % (sys.version_info[0], sys.version_info[1], platform.machine())


def main():
    # sys.path[0] is this script's folder; a kernel should not import from it.
    if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(
        os.path.abspath(__file__)
    ):
        del sys.path[0]
    if importlib.util.find_spec("ipykernel") is None:
        candidate = os.path.join(RUNTIMES, runtime_tag())
        if os.path.isdir(candidate):
            sys.path.append(candidate)
            importlib.invalidate_caches()
        if importlib.util.find_spec("ipykernel") is None:
            sys.stderr.write(
                "%s python=%d.%d tag=%s runtime=%s\n"
                % (
                    MARK,
                    sys.version_info[0],
                    sys.version_info[1],
                    runtime_tag(),
                    "present" if os.path.isdir(candidate) else "missing",
                )
            )
            sys.stderr.flush()
            sys.exit(3)
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()


if __name__ == "__main__":
    main()
