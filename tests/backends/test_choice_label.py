"""The container label that records a kernel's chosen resources (docs/choices.md), and
what an adopting server makes of it (pure: no engine)."""

from __future__ import annotations

import logging

from jupyter_tfenv.catalog.validation import environment_from_dict
from jupyter_tfenv.core.labels import LABEL_CHOICES, choices_label, choices_of
from jupyter_tfenv.provisioning.choices import adopted

ENTRY = {
    "id": "sized",
    "image": "python:3.11-slim",
    "resources": {"memory": "256m"},
    "choices": {"memory": ["256m", "512m"], "cpus": [1, 2]},
}


def test_the_label_round_trips_and_is_absent_without_a_choice():
    label = choices_label({"memory": "512m", "cpus": 2})
    assert choices_of(label) == {"memory": "512m", "cpus": 2}
    assert choices_label({}) == {}
    assert choices_of({}) == {}
    # Somebody else's label, or a broken one: no choice (the defaults), never an error.
    for broken in ("not json", "[1, 2]", '{"memory": {"nested": 1}}'):
        assert choices_of({LABEL_CHOICES: broken}) == {}, broken


def test_an_adopted_kernel_keeps_a_choice_still_offered_else_the_defaults(caplog):
    env = environment_from_dict(ENTRY)
    log = logging.getLogger("test_choice_label")
    assert adopted(env, {"memory": "512M"}, log) == {"memory": "512m", "cpus": 1}
    assert adopted(env, {}, log) == {}
    with caplog.at_level(logging.WARNING, logger="test_choice_label"):
        # The catalog no longer offers 1g (the admin changed the entry meanwhile).
        assert adopted(env, {"memory": "1g"}, log) == {}
    assert "not offered any more" in caplog.text
