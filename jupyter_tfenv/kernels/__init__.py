"""Jupyter kernels: the provisioner, their kernelspecs, and the files a kernel runs with.

- ``provisioner``: the jupyter_client kernel provisioner (entry point ``tfenv-docker``). It
  holds one backend (``jupyter_tfenv.backends``) and never asks which.
- ``kernelspecs``: one kernelspec per catalog environment, served live or written to disk.
- ``connection``: connection (runtime) folders on the host: where a kernel's connection
  file and IPC sockets live, and waiting until the kernel has bound them.
- ``runtimes``: ipykernel for images that lack it, built on the host and mounted read-only.
- ``in_container/``: ``launch.py`` and ``probe.py``, standard-library scripts that run inside
  the kernel's image (mounted at ``/opt/tfenv``), never imported by the server.
"""
