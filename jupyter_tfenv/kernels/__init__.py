"""What a kernel runs with, on the host and in its image (below every backend).

- ``connection``: connection (runtime) folders on the host: where a kernel's connection
  file and IPC sockets live, and waiting until the kernel has bound them.
- ``markers``: the *kept*, *holder* and *pool* markers in a runtime folder.
- ``pools``: the warm pool as the provisioner asks it (set by the server).
- ``runtimes``: ipykernel for images that lack it, built on the host and mounted read-only.
- ``probe_output``: what the in-image probe prints, and the answer made of it.
- ``in_container/``: ``launch.py`` and ``probe.py``, standard-library scripts that run inside
  the kernel's image (mounted at ``/opt/tfenv``), never imported by the server.
"""
