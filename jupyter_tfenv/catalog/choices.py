"""Resources a user chooses at launch, within what the catalog entry offers.

An entry may offer ``choices`` (docs/choices.md)::

    gpus: 1
    resources: {memory: 8g}
    choices:
      gpus: [0, 1, 2]
      memory: [8g, 16g]
      cpus: [2, 4]
      default: {cpus: 2}

:func:`parse_choices` checks them while the entry is validated (a default must be one of
the choices; GPU counts need an entry that allocates GPUs by count);
:meth:`Choices.resolve` turns what a start asks for into one value per offered resource,
refusing anything else with the allowed values; :func:`apply_choices` gives the
environment those values, so that every backend builds the container from it as from
any entry; :func:`check_limits` holds the choices to a catalog-wide limit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jupyter_tfenv.catalog.model import parse_size
from jupyter_tfenv.errors import CatalogError

if TYPE_CHECKING:
    from jupyter_tfenv.catalog.model import Environment

#: The resources an entry may offer, in the order the dialog shows them.
CHOICE_KEYS = ("gpus", "memory", "cpus", "shm_size")
_SIZES = ("memory", "shm_size")


class ChoiceError(CatalogError):
    """A start asked for resources outside its environment's choices (HTTP 400)."""

    http_status = 400


def _amount(key: str, value: Any) -> float:
    """A choice's value as a number (sizes in bytes), for comparisons."""
    if isinstance(value, bool):
        raise CatalogError(f"{key}: {value!r} is not a value for {key}.")
    if key in _SIZES:
        if not isinstance(value, int | str):
            raise CatalogError(f"{key}: {value!r} is not a size (e.g. 8g).")
        size = parse_size(value)
        assert size is not None
        return float(size)
    if not isinstance(value, int | float):
        raise CatalogError(f"{key}: {value!r} is not a number.")
    return float(value)


def _shown(values: tuple[Any, ...]) -> str:
    return ", ".join(str(v) for v in values)


@dataclass(frozen=True)
class Choices:
    """What an entry offers (``options``: key → values as the catalog wrote them) and
    the value of each when a start asks for none (``default``)."""

    options: Mapping[str, tuple[Any, ...]]
    default: Mapping[str, Any] = field(default_factory=dict)

    def to_config(self) -> dict[str, Any]:
        """The catalog shape again (kernelspecs carry it)."""
        return {**{k: list(v) for k, v in self.options.items()}, "default": dict(self.default)}

    def summary(self) -> dict[str, Any]:
        """For the frontend's dialog: the keys in order, their values and defaults."""
        return {
            "options": {k: list(v) for k, v in self.options.items()},
            "default": dict(self.default),
        }

    def match(self, key: str, value: Any) -> Any:
        """The offered value equal to ``value`` (``"8G"`` is ``8g``), or ChoiceError."""
        offered = self.options.get(key)
        if offered is None:
            allowed = ", ".join(self.options) or "nothing"
            raise ChoiceError(
                f"choices: '{key}' cannot be chosen for this environment; it offers {allowed}."
            )
        try:
            wanted = _amount(key, value)
        except CatalogError:
            wanted = None
        for option in offered:
            if wanted is not None and _amount(key, option) == wanted:
                return option
        raise ChoiceError(
            f"choices: {key} {value!r} is not offered for this environment; choose one of "
            f"{_shown(offered)}."
        )

    def resolve(self, requested: Mapping[str, Any] | None) -> dict[str, Any]:
        """One value per offered resource: the requested one (checked), else the default."""
        requested = dict(requested or {})
        chosen = {key: self.match(key, value) for key, value in requested.items()}
        return {key: chosen.get(key, self.default[key]) for key in self.options}


def parse_choices(raw: Mapping[str, Any] | None, entry: Mapping[str, Any]) -> Choices | None:
    """An entry's ``choices`` (already schema-checked) → :class:`Choices`, or CatalogError.

    A resource's default is ``default``'s, else the entry's own value (``gpus``,
    ``resources.*``), which must then be one of the choices, else the first choice.
    """
    if not raw:
        return None
    options = {k: tuple(raw[k]) for k in CHOICE_KEYS if k in raw}
    if not options:
        raise CatalogError("choices: offers nothing; list gpus, memory, cpus or shm_size.")
    stated = dict(raw.get("default") or {})
    for key in stated:
        if key not in options:
            raise CatalogError(
                f"choices: default.{key}: {key} is not among the choices; offer it "
                f"(choices.{key}) or remove it from default."
            )
    gpus = entry.get("gpus", "none")
    if "gpus" in options and (isinstance(gpus, bool) or not isinstance(gpus, int)):
        raise CatalogError(
            f"choices: gpus: GPU counts can be chosen only in an entry that asks for GPUs by "
            f"count (gpus: 1, …); this one has gpus: {gpus}. Set gpus to the default count, "
            "or remove choices.gpus."
        )
    resources = entry.get("resources") or {}
    own = {"gpus": gpus, **{k: resources.get(k) for k in ("memory", "cpus", "shm_size")}}
    probe = Choices(options)
    default: dict[str, Any] = {}
    for key, offered in options.items():
        amounts = [_amount(key, v) for v in offered]
        if len(set(amounts)) != len(amounts):
            raise CatalogError(f"choices: {key}: a value is listed twice ({_shown(offered)}).")
        if key in stated:
            where, value = f"default.{key}", stated[key]
        elif own.get(key) is not None:
            where, value = f"the entry's own {key}", own[key]
        else:
            default[key] = offered[0]
            continue
        try:
            default[key] = probe.match(key, value)
        except ChoiceError:
            raise CatalogError(
                f"choices: {where} ({value}) is not among the choices ({_shown(offered)}); "
                f"add it to choices.{key} or set choices.default.{key} to one of them."
            ) from None
    return Choices(options, default)


def check_limits(choices: Choices | None, limits: Mapping[str, Any]) -> None:
    """Refuse choices above a catalog-wide limit (``TFEnvCatalog.choice_limits``)."""
    if choices is None:
        return
    for key, offered in choices.options.items():
        limit = limits.get(key)
        if limit is None:
            continue
        above = [v for v in offered if _amount(key, v) > _amount(key, limit)]
        if above:
            raise CatalogError(
                f"choices: {key}: {_shown(tuple(above))} is above the catalog's limit of "
                f"{limit} (c.TFEnvCatalog.choice_limits); offer less."
            )


def apply_choices(env: Environment, requested: Mapping[str, Any] | None) -> Environment:
    """``env`` with the chosen resources (checked against its choices; the defaults for
    what was not asked). An environment without choices refuses any request."""
    if env.choices is None:
        if requested:
            raise ChoiceError(
                f"choices: environment '{env.id}' offers no choices; start it without "
                f"({', '.join(sorted(requested))} asked for)."
            )
        return env
    chosen = env.choices.resolve(requested)
    changes: dict[str, Any] = {"chosen": chosen}
    if "gpus" in chosen:
        changes["gpus"] = int(chosen["gpus"]) or "none"
    for key in _SIZES:
        if key in chosen:
            changes[key] = parse_size(chosen[key])
    if "cpus" in chosen:
        changes["cpus"] = float(chosen["cpus"])
    return dataclasses.replace(env, **changes)
