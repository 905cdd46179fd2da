"""Checkpoints that survive the kernel: storage per user and environment, and browsing it.

Every tfenv kernel gets a checkpoint folder and a TensorBoard log folder outside its
container, one per user and environment: folders under a host root (bind mounts) or named
Docker volumes. The modules, by concern:

* :mod:`~jupyter_tfenv.checkpoints.layout`: the storage configuration (``StorageConfig``),
  name escaping, ``Location`` and ``locate``, template checks, the errors.
* :mod:`~jupyter_tfenv.checkpoints.storage`: preparing a kernel's folders before it starts
  (``prepare_kernel_storage``; fd-safe bind folders, volumes, other environments' mounts).
* :mod:`~jupyter_tfenv.checkpoints.mountcheck`: checking a bind folder's path component by
  component just before it is mounted.
* :mod:`~jupyter_tfenv.checkpoints.helper`: the self-contained inventory/delete code and the
  short-lived helper container that runs it next to a volume (``run_helper``).
* :mod:`~jupyter_tfenv.checkpoints.classification`: grouping a folder's files into checkpoints
  (``classify``, ``parse_state``, ``public_item``).
* :mod:`~jupyter_tfenv.checkpoints.browser`: discovering a user's environments and the
  ``CheckpointBrowser`` the REST API lists and deletes with.
"""
