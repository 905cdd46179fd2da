"""The environment catalog: what a team declares once, validated, with problems reported.

Environments come from two places, merged in this order:

1. ``c.TFEnvCatalog.environments`` in a Jupyter config file (a list of dicts);
2. team catalog files (YAML or JSON, the shape of ``schema/catalog.schema.json``) named in
   ``c.TFEnvCatalog.catalog_files`` or in the ``JUPYTER_TFENV_CATALOG`` environment
   variable (paths separated by ``os.pathsep``). Such a file can live in a repository.

An invalid entry is reported with its file, entry and field, and left out; the other
entries keep working. Files are re-read when they change, so a catalog edit shows up in
the kernel picker without a server restart.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from traitlets import Dict, Enum, List, Unicode, default
from traitlets.config import LoggingConfigurable

from jupyter_tfenv.catalog.choices import CHOICE_KEYS, check_limits
from jupyter_tfenv.catalog.derived import cycle_message, order_entries
from jupyter_tfenv.catalog.images import PINNING_POLICIES
from jupyter_tfenv.catalog.model import KERNEL_PREFIX, CatalogProblem, Environment
from jupyter_tfenv.catalog.validation import _realpath, environment_from_dict
from jupyter_tfenv.errors import CatalogError, UnknownEnvironmentError

CATALOG_ENV_VAR = "JUPYTER_TFENV_CATALOG"
LOCK_ENV_VAR = "JUPYTER_TFENV_LOCK"


def read_catalog_file(path: str) -> list[Any]:
    """Read a catalog file's ``environments`` list; raise ``CatalogError`` when unreadable."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise CatalogError(f"cannot read the catalog file: {err.strerror or err}") from err
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        raise CatalogError(
            f"not valid {'JSON' if path.endswith('.json') else 'YAML'}: {err}"
        ) from err
    if not isinstance(data, dict) or not isinstance(data.get("environments"), list):
        raise CatalogError("expected a mapping with an 'environments' list at the top.")
    extra = set(data) - {"version", "environments"}
    if extra:
        raise CatalogError(f"unknown top-level keys: {', '.join(sorted(extra))}.")
    if data.get("version", 1) != 1:
        raise CatalogError(f"catalog version {data['version']!r} is not supported; use 1.")
    return data["environments"]


def _pip_files(sources: list[tuple[str, list[Any]]]) -> tuple[str, ...]:
    """The ``pip_file`` requirement files of derived entries (relative to their file)."""
    found: dict[str, None] = {}
    for source, entries in sources:
        for raw in entries:
            name = raw.get("pip_file") if isinstance(raw, dict) else None
            if isinstance(name, str) and name:
                found.setdefault(os.path.join(os.path.dirname(source), name), None)
    return tuple(found)


def _read_resolutions(path: Path | None) -> dict[str, Any]:
    """The lock file's ``resolved`` records of derived entries (by id); {} when there is
    none or it cannot be read (`jupyter tfenv check` reports a broken lock file)."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    resolved = data.get("resolved") if isinstance(data, dict) else None
    return dict(resolved) if isinstance(resolved, dict) else {}


def _bind_sources(sources: list[tuple[str, list[Any]]]) -> tuple[str, ...]:
    """The absolute bind sources named by any entry (valid or not) of ``sources``."""
    found: dict[str, None] = {}
    for _, entries in sources:
        for raw in entries:
            mounts = raw.get("mounts") if isinstance(raw, dict) else None
            for mount in mounts if isinstance(mounts, list) else []:
                if not isinstance(mount, dict) or mount.get("type", "bind") != "bind":
                    continue
                src = mount.get("source")
                if isinstance(src, str) and os.path.isabs(src):
                    found.setdefault(src, None)
    return tuple(found)


class TFEnvCatalog(LoggingConfigurable):
    """The team's environments, from config and catalog files, re-read when files change."""

    environments: List[Any] = List(
        help="""Environments declared in Jupyter config, each a dict shaped like an entry of
        schema/catalog.schema.json, e.g.
        {"id": "tf220", "image": "tensorflow/tensorflow:2.20.0-jupyter"}.""",
    ).tag(config=True)

    catalog_files = List(
        Unicode(),
        help=f"""Team catalog files (YAML or JSON). Paths in ${CATALOG_ENV_VAR}
        (separated by '{os.pathsep}') are added to these.""",
    ).tag(config=True)

    pinning = Enum(
        list(PINNING_POLICIES),
        default_value="tags",
        help="""How strictly images must be pinned: 'tags' refuses floating tags such as
        ':latest' (default), 'digests' accepts only repo@sha256:… references, 'any' accepts
        everything (not recommended: the same name can run different bits tomorrow).""",
    ).tag(config=True)

    lock_file = Unicode(
        help=f"""The lock file recording the digest each tag resolved to
        (`jupyter tfenv lock` writes it). Default: ${LOCK_ENV_VAR}, else tfenv-lock.json
        beside the first catalog file.""",
    ).tag(config=True)

    lock_policy = Enum(
        ["enforce", "strict", "warn", "off"],
        default_value="enforce",
        help="""What a kernel start does with the lock file. 'enforce' (default) refuses a
        kernel whose local image no longer carries the locked digest of its tag (the tag
        was re-pointed); it checks only tags that have an entry: an environment missing
        from the lock file, or a missing lock file, still starts. 'strict' refuses those
        too (run `jupyter tfenv lock <id>`); references pinned by digest need no entry.
        'warn' logs a mismatch and starts, 'off' ignores the lock.""",
    ).tag(config=True)

    choice_limits = Dict(
        help="""The most any entry may offer in its choices (docs/choices.md), e.g.
        {"gpus": 2, "memory": "64g", "cpus": 16, "shm_size": "8g"}; an entry offering more
        is left out, with the reason. Unset keys: no limit.""",
    ).tag(config=True)

    @default("lock_file")
    def _default_lock_file(self) -> str:
        return os.environ.get(LOCK_ENV_VAR, "")

    def lock_path(self) -> Path | None:
        """Where the lock file is (or would be written), None when there is no catalog file."""
        if self.lock_file:
            return Path(self.lock_file).expanduser().resolve()
        files = self.files()
        return Path(files[0]).parent / "tfenv-lock.json" if files else None

    @default("catalog_files")
    def _default_catalog_files(self) -> list[str]:
        return []

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stamp: tuple[Any, ...] | None = None
        self._envs: dict[str, Environment] = {}
        self._problems: list[CatalogProblem] = []
        #: Bind sources of the last load: where they resolve to is part of the stamp, so
        #: that a symlink re-pointed at a refused path takes its entry out at once.
        self._bind_sources: tuple[str, ...] = ()
        #: Requirement files of derived entries: their changes are part of the stamp too.
        self._pip_files: tuple[str, ...] = ()

    def files(self) -> list[str]:
        extra = [p for p in os.environ.get(CATALOG_ENV_VAR, "").split(os.pathsep) if p]
        seen: dict[str, None] = {}
        for path in [*self.catalog_files, *extra]:
            seen.setdefault(os.path.abspath(os.path.expanduser(path)), None)
        return list(seen)

    def _current_stamp(self) -> tuple[Any, ...]:
        stamp: list[Any] = [
            json.dumps(self.environments, sort_keys=True, default=str),
            self.pinning,
            json.dumps(self.choice_limits, sort_keys=True, default=str),
        ]
        lock = self.lock_path()
        for path in [*self.files(), *([str(lock)] if lock is not None else [])]:
            try:
                st = os.stat(path)
                stamp.append((path, st.st_mtime_ns, st.st_size))
            except OSError:
                stamp.append((path, None, None))
        return tuple(stamp)

    def _bind_stamp(self) -> tuple[Any, ...]:
        binds = tuple((src, _realpath(src) or "") for src in self._bind_sources)
        pips: list[tuple[str, int | None, int | None]] = []
        for path in self._pip_files:
            try:
                st = os.stat(path)
                pips.append((path, st.st_mtime_ns, st.st_size))
            except OSError:
                pips.append((path, None, None))
        return (binds, tuple(pips))

    def refresh(self, *, force: bool = False) -> None:
        """Reload when config or any catalog file changed since the last load."""
        base = self._current_stamp()
        stamp = (base, self._bind_stamp())
        if not force and stamp == self._stamp:
            return
        envs: dict[str, Environment] = {}
        problems: list[CatalogProblem] = []
        sources: list[tuple[str, list[Any]]] = [
            ("Jupyter config (TFEnvCatalog.environments)", list(self.environments))
        ]
        for path in self.files():
            try:
                sources.append((path, read_catalog_file(path)))
            except CatalogError as err:
                problems.append(CatalogProblem(path, "", "", err.message))
        self._bind_sources = _bind_sources(sources)
        self._pip_files = _pip_files(sources)
        # Derived entries (``base``) after the entries they name, chains base first; the
        # lock file's resolution of each names its built image.
        resolutions = _read_resolutions(self.lock_path())
        flat = [
            ((source, index), raw)
            for source, entries in sources
            for index, raw in enumerate(entries)
            if isinstance(raw, dict)
        ]
        ordered, cycles = order_entries(flat)
        for source, entries in sources:
            for index, raw in enumerate(entries):
                if not isinstance(raw, dict):
                    problems.append(
                        CatalogProblem(source, f"#{index + 1}", "", "an entry must be a mapping.")
                    )
                elif isinstance(raw.get("id"), str) and raw["id"] in cycles:
                    fld, _, msg = cycle_message(cycles[raw["id"]]).partition(": ")
                    problems.append(CatalogProblem(source, f"'{raw['id']}'", fld, msg))
        for (source, index), written in ordered:
            label = f"#{index + 1}"
            if isinstance(written.get("id"), str):
                label = f"'{written['id']}'"
            record = resolutions.get(written["id"]) if isinstance(written.get("id"), str) else None
            raw = written
            if "base" in written and record is not None:
                raw = {**written, "resolved": record}
            try:
                env = environment_from_dict(raw, pinning=self.pinning, source=source, bases=envs)
                check_limits(env.choices, self._choice_limits())
            except CatalogError as err:
                fld, _, msg = err.message.partition(": ")
                problems.append(CatalogProblem(source, label, fld, msg or fld))
                continue
            if env.id in envs:
                problems.append(
                    CatalogProblem(
                        source,
                        label,
                        "id",
                        f"duplicate id: already defined in {envs[env.id].source}; "
                        "ids must be unique across all catalog sources.",
                    )
                )
                continue
            envs[env.id] = env
        for problem in problems:
            if problem not in self._problems:
                self.log.warning("tfenv catalog: %s (entry left out)", problem)
        self._envs, self._problems = envs, problems
        self._stamp = (base, self._bind_stamp())

    def _choice_limits(self) -> dict[str, Any]:
        unknown = set(self.choice_limits) - set(CHOICE_KEYS)
        if unknown:
            raise CatalogError(
                f"choices: c.TFEnvCatalog.choice_limits names {', '.join(sorted(unknown))}; "
                f"it takes {', '.join(CHOICE_KEYS)}."
            )
        return dict(self.choice_limits)

    def all(self) -> list[Environment]:
        self.refresh()
        return list(self._envs.values())

    def problems(self) -> list[CatalogProblem]:
        self.refresh()
        return list(self._problems)

    def get(self, env_id: str) -> Environment:
        self.refresh()
        try:
            return self._envs[env_id]
        except KeyError:
            known = ", ".join(sorted(self._envs)) or "none"
            raise UnknownEnvironmentError(
                f"No environment '{env_id}' in the tfenv catalog (known: {known}). "
                "Check the id, or `jupyter tfenv check` for entries that were left out."
            ) from None

    def by_kernel_name(self, kernel_name: str) -> Environment | None:
        if not kernel_name.startswith(KERNEL_PREFIX):
            return None
        self.refresh()
        return self._envs.get(kernel_name[len(KERNEL_PREFIX) :])
