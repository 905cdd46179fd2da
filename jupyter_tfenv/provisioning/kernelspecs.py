"""Kernelspecs: one per catalog environment, served live or written to disk.

:class:`TFEnvKernelSpecManager` adds the catalog's environments to the kernelspecs found
on disk, so that catalog edits show up in ``/api/kernelspecs`` (and the kernel picker)
without writing files. :func:`write_kernelspecs` writes the very same specs to a
kernels folder, for nbclient, papermill and ``jupyter console``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpec, KernelSpecManager, NoSuchKernel
from tornado.web import HTTPError
from traitlets import Instance, default

from jupyter_tfenv.backends.docker.engine import launcher_command
from jupyter_tfenv.catalog.loading import TFEnvCatalog
from jupyter_tfenv.catalog.lock import LockFile
from jupyter_tfenv.catalog.model import KERNEL_PREFIX, Environment
from jupyter_tfenv.errors import TFEnvError

PROVISIONER_NAME = "tfenv-docker"
RESOURCES_DIR = Path(__file__).parents[1] / "resources"


def kernelspec_dict(
    env: Environment,
    pinning: str = "tags",
    *,
    locked_digest: str | None = None,
    lock_policy: str = "enforce",
    lock_file: str | None = None,
) -> dict[str, Any]:
    """The ``kernel.json`` content of an environment.

    ``locked_digest`` travels with the spec, so that a spec written to disk enforces the
    lock as the server does. Under ``strict`` the policy (and the lock file's path, for the
    message) travels even without a digest: the provisioner refuses such a spec.
    """
    config: dict[str, Any] = {"environment": env.to_config(), "pinning": pinning}
    if locked_digest and lock_policy != "off":
        config.update(locked_digest=locked_digest, lock_policy=lock_policy)
    if lock_policy == "strict":
        config["lock_policy"] = "strict"
        if lock_file:
            config["lock_file"] = lock_file
    return {
        "argv": launcher_command(env.python, "{connection_file}"),
        "display_name": env.display_name,
        "language": "python",
        # docker kill --signal SIGINT reaches the kernel through the container's init.
        "interrupt_mode": "signal",
        "env": {},
        "metadata": {
            "debugger": True,
            "kernel_provisioner": {
                "provisioner_name": PROVISIONER_NAME,
                "config": config,
            },
            "tfenv": env.summary(),
        },
    }


def kernelspec_for(
    env: Environment,
    pinning: str = "tags",
    lock: LockFile | None = None,
    lock_policy: str = "enforce",
    lock_file: str | None = None,
) -> KernelSpec:
    locked = lock.get(env.image) if lock is not None else None
    spec = kernelspec_dict(
        env,
        pinning,
        locked_digest=locked,
        lock_policy=lock_policy,
        lock_file=lock_file or (str(lock.path) if lock is not None else None),
    )
    return KernelSpec(resource_dir=str(RESOURCES_DIR), **spec)


class UnknownEnvironmentKernel(NoSuchKernel, HTTPError):
    """A ``tfenv-<id>`` kernel name whose environment is not in the catalog (removed, or
    left out as invalid). A ``NoSuchKernel`` for jupyter_client and jupyter_server, and a
    404 with what to do where it reaches an HTTP answer (``POST /api/kernels`` would
    otherwise answer 500 "Unhandled error")."""

    def __init__(self, kernel_name: str, message: str) -> None:
        NoSuchKernel.__init__(self, kernel_name)
        # Last: tornado formats log_message with args, which must then be empty.
        HTTPError.__init__(self, 404, message, reason="Unknown environment")
        self.message = message

    def __str__(self) -> str:
        return self.message


class TFEnvKernelSpecManager(KernelSpecManager):
    """The usual kernelspecs plus one ``tfenv-<id>`` spec per catalog environment."""

    catalog = Instance(TFEnvCatalog)

    #: Environment ids left out of the kernel picker: in broker mode, those the broker does
    #: not allow this user (kept up to date by the extension). Their specs still resolve by
    #: name, so that a notebook that names one gets the broker's refusal when it starts.
    hidden_environments: frozenset[str] = frozenset()

    @default("catalog")
    def _default_catalog(self) -> TFEnvCatalog:
        return TFEnvCatalog(parent=self)

    def _tfenv_specs(self) -> dict[str, Environment]:
        hidden = self.hidden_environments
        return {env.kernel_name: env for env in self.catalog.all() if env.id not in hidden}

    def _spec(self, env: Environment) -> KernelSpec:
        catalog = self.catalog
        path = catalog.lock_path()
        lock = None
        if path is not None and catalog.lock_policy != "off":
            try:
                lock = LockFile.load(path)
            except TFEnvError as err:
                self.log.warning("tfenv: lock file ignored: %s", err)
        return kernelspec_for(
            env, catalog.pinning, lock, catalog.lock_policy, str(path) if path else None
        )

    def find_kernel_specs(self) -> dict[str, str]:
        found: dict[str, str] = super().find_kernel_specs()
        # A catalog entry wins over a stale on-disk copy of the same name.
        for name in self._tfenv_specs():
            found[name] = str(RESOURCES_DIR)
        return found

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        if kernel_name.startswith(KERNEL_PREFIX):
            env = self.catalog.by_kernel_name(kernel_name)
            if env is not None:
                return self._spec(env)
        try:
            return super().get_kernel_spec(kernel_name)
        except KeyError as err:
            if kernel_name.startswith(KERNEL_PREFIX):
                raise self._unknown(kernel_name) from None
            if isinstance(err, NoSuchKernel):
                raise
            raise NoSuchKernel(kernel_name) from None

    def _unknown(self, kernel_name: str) -> UnknownEnvironmentKernel:
        """The error for a ``tfenv-`` name no catalog entry has: the catalog says why."""
        try:
            self.catalog.get(kernel_name[len(KERNEL_PREFIX) :])
        except TFEnvError as err:
            return UnknownEnvironmentKernel(kernel_name, f"No kernel '{kernel_name}': {err}")
        return UnknownEnvironmentKernel(kernel_name, f"No kernel '{kernel_name}'.")

    def get_all_specs(self) -> dict[str, dict[str, Any]]:
        specs: dict[str, dict[str, Any]] = super().get_all_specs()
        for name, env in self._tfenv_specs().items():
            specs[name] = {
                "resource_dir": str(RESOURCES_DIR),
                "spec": self._spec(env).to_dict(),
            }
        return specs


def write_kernelspecs(
    envs: list[Environment],
    kernels_dir: Path,
    *,
    pinning: str = "tags",
    prune: bool = False,
    lock: LockFile | None = None,
    lock_policy: str = "enforce",
) -> list[Path]:
    """Write one kernelspec folder per environment under ``kernels_dir``.

    With ``prune``, ``tfenv-*`` folders of environments no longer in the catalog go.
    """
    kernels_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for env in envs:
        folder = kernels_dir / env.kernel_name
        folder.mkdir(exist_ok=True)
        for resource in RESOURCES_DIR.iterdir():
            if resource.is_file():
                shutil.copyfile(resource, folder / resource.name)
        (folder / "kernel.json").write_text(
            json.dumps(
                kernelspec_dict(
                    env,
                    pinning,
                    locked_digest=lock.get(env.image) if lock is not None else None,
                    lock_policy=lock_policy,
                    lock_file=str(lock.path) if lock is not None else None,
                ),
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
        written.append(folder)
    if prune:
        keep = {env.kernel_name for env in envs}
        for folder in kernels_dir.glob(f"{KERNEL_PREFIX}*"):
            if folder.is_dir() and folder.name not in keep:
                shutil.rmtree(folder)
    return written
