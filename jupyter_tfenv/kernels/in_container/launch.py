"""Start ipykernel inside a jupyter_tfenv kernel container.

Mounted read-only at /opt/tfenv/launch.py and run by the image's own python as
``python -I /opt/tfenv/launch.py -f <connection file>``. Standard library only, and
Python 3.6 syntax, because it runs in images we do not control.

Isolated mode (``-I``) is deliberate: the notebook folder is often the user's home, and
a plain ``python`` would import ``~/.local/lib/pythonX.Y/site-packages/usercustomize.py``
(and run its ``.pth`` files, and honour ``PYTHONPATH``/``PYTHONSTARTUP``…) before this
file's first line, while the broker is still checking the container's mounts. Under
``-I`` none of that happens: ``sys.path`` is the image's standard library and
site-packages only, and this launcher sets it up itself.

If the image has ipykernel (the -jupyter images), that one runs. If not, and a kernel
runtime for this Python ABI was built on the host (``jupyter tfenv runtime build``) and
mounted at /opt/tfenv/runtimes, its packages are appended to sys.path, after the image's
own, so that the image's TensorFlow, NumPy… still win. Otherwise the launcher says so on
stderr with a marker the server turns into an actionable message. It never installs
anything.

What the kernel gets back, after the launcher's own setup (ipykernel and what it needs
are imported first, from the image or the runtime only): the image's ``PYTHONPATH``
entries (in front, as python would put them), the user's site-packages (``pip install
--user`` packages, with their ``.pth`` files, where python would put it: before the
image's site-packages) and ``PYTHONDONTWRITEBYTECODE``. That is what users expect of
their kernel; with the broker's staging mounts the folder mounted is the folder that
was checked, so this code is the user's own code in the user's own kernel. What it
does not get back: ``usercustomize``/``sitecustomize`` of the user's site (put start-up
code in ``~/.ipython/profile_default/startup/``) and the other ``PYTHON*`` variables of
the interpreter's start (processes the kernel starts still see them all).
"""

import importlib
import importlib.util
import os
import platform
import site
import sys

RUNTIMES = "/opt/tfenv/runtimes"
MARK = "TFENV-NO-IPYKERNEL"


def runtime_tag():
    return "cp%d%d-%s" % (sys.version_info[0], sys.version_info[1], platform.machine())


def restore_user_paths():
    """Give the kernel the image's PYTHONPATH and the user's site-packages back."""
    here = os.path.dirname(os.path.abspath(__file__))
    extra = [
        p
        for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
        if p and os.path.abspath(p) != here
    ]
    sys.path[0:0] = [p for p in extra if p not in sys.path]
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        sys.dont_write_bytecode = True
    try:
        user_site = site.getusersitepackages()
    except Exception:  # no HOME, no pwd entry: no user site
        return
    if not user_site or not os.path.isdir(user_site) or user_site in sys.path:
        return
    # Where python puts it: after the standard library, before the image's site-packages.
    before = len(sys.path)
    for index, entry in enumerate(sys.path):
        if entry.rstrip("/").endswith(("site-packages", "dist-packages")):
            before = index
            break
    known = list(sys.path)
    site.addsitedir(user_site)  # appends it (and what its .pth files add)
    added = [p for p in sys.path if p not in known]
    sys.path[:] = known[:before] + added + known[before:]
    site.ENABLE_USER_SITE = True
    importlib.invalidate_caches()


def main():
    # sys.path[0] is this script's folder without -I; a kernel should not import from it.
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

    restore_user_paths()
    kernelapp.launch_new_instance()


if __name__ == "__main__":
    main()
