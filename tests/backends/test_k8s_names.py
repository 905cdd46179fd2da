"""Kubernetes object names and label values over any user name (issue 17), property-based.

For arbitrary user names, kernel ids, environment ids and server names (any Unicode,
long ones, names made to look like another's escaped form): every name the product
gives a user's objects is a valid DNS-1123 label within 63 characters, every label value
is valid, and no two different (user, kernel id) or (user, environment) give one name,
so one user's start can never name, replace or mount another user's object. The server
label schemes are checked the same way: a name the broker accepts has a label value no
other name has.
"""

from __future__ import annotations

import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from jupyter_tfenv.backends.kubernetes import manifests as m

DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

TRICKY = [
    "alice",
    "Alice",
    "a-lice",
    "a--lice",
    "alice@example.org",
    "bob.x",
    "bob-2ex",
    "bob-2d2ex",
    "x" * 63,
    "x" * 64,
    "ünïcødé",
    "a\x00b",
    "-",
    ".",
]

#: Names of any kind, and names chosen to equal another name's escaped form.
names = st.one_of(
    st.sampled_from(TRICKY),
    st.text(min_size=1, max_size=90),
    st.from_regex(r"[a-z0-9][a-z0-9.@_-]{0,70}", fullmatch=True),
    st.builds(m.label_value, st.text(min_size=1, max_size=40)),
    st.builds(lambda a, b: f"{a}-{b}", st.sampled_from(TRICKY), st.sampled_from(TRICKY)),
)
kernel_ids = st.one_of(
    st.from_regex(r"[A-Za-z0-9_-]{8,64}", fullmatch=True), st.uuids().map(str), names
)


# database=None: no .hypothesis/ folder in the checkout (a test run leaves git status clean).


def _valid_name(name: str) -> None:
    assert DNS_LABEL_RE.match(name) and len(name) <= 63, name


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.tuples(names, kernel_ids), min_size=2, max_size=6, unique=True))
@example([("a", "b-c-d-e-f-g"), ("a-b", "c-d-e-f-g")])
@example([("a\x00b", "c0000000"), ("a", "b\x00c0000000")])
def test_kernel_object_names_are_injective_and_valid(pairs):
    for make in (m.kernel_pod_name, m.kernel_secret_name):
        made = [make(user, kid) for user, kid in pairs]
        for name in made:
            _valid_name(name)
        assert len(set(made)) == len(pairs), (pairs, made)


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.tuples(names, names), min_size=2, max_size=6, unique=True))
@example([("a", "b-c"), ("a-b", "c")])
def test_claim_names_are_injective_and_valid(pairs):
    made = [m.claim_name(user, env) for user, env in pairs]
    for name in made:
        _valid_name(name)
        assert len(name) <= 63
    assert len(set(made)) == len(pairs), (pairs, made)


@settings(max_examples=500, deadline=None, database=None)
@given(names, names)
def test_label_values_are_injective_and_valid(a, b):
    """Even a name chosen to equal another's escaped label value gets its own value."""
    la, lb = m.label_value(a), m.label_value(b)
    assert LABEL_VALUE_RE.match(la) and len(la) <= 63
    assert (la == lb) == (a == b)
    # The chosen-name attack: b is a's escaped form, written as a name.
    assert m.label_value(la) != la or la == a


@settings(max_examples=300, deadline=None, database=None)
@given(names, names, st.sampled_from(m.SERVER_LABEL_SCHEMES))
@example("bob.x", "bob-2ex", "escape")
def test_accepted_names_have_server_labels_of_their_own(a, b, scheme):
    """A name the broker accepts under a scheme has a server label value that no other
    name shares (so a kernel's policy admits its owner's server only)."""
    if m.server_label_problem(a, scheme):
        return
    la = m.server_label(a, scheme)
    assert LABEL_VALUE_RE.match(la) and len(la) <= 63
    if a != b:
        assert m.server_label(b, scheme) != la, (a, b, scheme)
