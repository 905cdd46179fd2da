"""The Docker backend: kernel containers on a Docker engine.

- ``engine``: the client (and what an unreachable engine looks like), container specs,
  hardening, the launcher mount.
- ``gpu`` and ``gpu_alloc``: the host's GPUs (NVML), and handing devices out to kernels.
- ``live``: a container's live CPU, memory, pids and GPU readings.
- ``probe``: what an image really has (Python, TensorFlow, CUDA), by a throwaway container.
- ``pulls``: image pulls with per-layer progress, lock-aware, cancellable.
"""
