"""Jupyter kernels of catalog environments: the provisioner and the kernelspecs.

- ``provisioner``: ``TFEnvKernelProvisioner`` (entry point ``tfenv-docker``; the old name
  ``DockerKernelProvisioner`` and its config section keep working). It chooses once where
  its kernel runs and holds that runner; none of its methods asks which.
- ``local``: the runner for a server's own Docker engine (in-process, with the shared
  steps of ``jupyter_tfenv.backends.docker``).
- ``brokered``: the runner for a single-user server on JupyterHub, through
  ``jupyter_tfenv.backends.broker.BrokerBackend``.
- ``settings``: the provisioner's traits (``c.TFEnvKernelProvisioner.*``).
- ``kernelspecs``: one kernelspec per catalog environment, served live or written to disk.
"""
