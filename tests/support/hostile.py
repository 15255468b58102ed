"""What a hostile caller sends, as hypothesis strategies: text no store can keep, over-long
and deeply nested values, wrong types, unknown fields, and valid requests with one field
made hostile (see tests/e2e/test_fuzz.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st
from pydantic import BaseModel

from tests.conftest import PASSWORD, unique

NASTY = [
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff",
    "x\udcffy",
    "\ud83d",  # half of an emoji
    "x" * 73,
    "é" * 37,
    "ｐａｓｓｗｏｒｄ",
    "\ufdfa" * 3,
    "x" * 5000,
    "",
    " ",
    "null",
    "-1",
    "9" * 40,
    "%00",
    "../../etc/passwd",
    "' OR 1=1 --",
    "\r\nX-Injected: 1",
    "\u202e\u200b",
]
TEXT = st.one_of(
    st.sampled_from(NASTY),
    st.text(max_size=20),  # any code point but a surrogate, NUL and control characters included
    st.text(st.characters(categories=["Cs", "Cc", "Cf", "Zl"]), max_size=6),  # surrogates too
    st.text(st.characters(codec="ascii"), min_size=60, max_size=400),  # over-long
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)


def nested(depth: int) -> Any:
    value: Any = "deep"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


DEEP = st.integers(min_value=30, max_value=400).map(nested)


# A user id in a body: a new user of the fuzz's own ("victim"), or none at all. Never a
# small number: that would be a user of another test, which the superuser might delete.
IDS = st.one_of(st.just("victim"), st.sampled_from([0, -1, 10**17, 2**63, "7", 1.5, None]))
VICTIM = "victim"


def typed(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Hostile values of the field's own JSON type, to get past the type check."""
    kinds = {branch.get("type") for branch in schema.get("anyOf", [schema])}
    if "string" in kinds:
        return TEXT
    if "integer" in kinds:
        return st.integers()
    if "boolean" in kinds:
        return st.booleans()
    return VALUES


@dataclass(frozen=True)
class Mutation:
    """A request that would be valid (see `template`) with one field set to a hostile value:
    the way past validation to the use cases and the stores."""

    field: str
    value: Any


def template(queue: str, login: str) -> dict[str, Any]:
    """A valid request of the queue, for a Mutation (an empty one where none is needed)."""
    name = unique("fz")
    valid: dict[str, dict[str, Any]] = {
        "warden.users.register": {
            "email": f"{name}@example.com",
            "username": name,
            "password": PASSWORD,
            "full_name": "Fuzz",
        },
        "warden.auth.login": {"username": login, "password": PASSWORD},
        "warden.users.update_me": {"full_name": "Fuzz"},
        "warden.users.change_password": {"current_password": PASSWORD, "new_password": PASSWORD},
        "warden.users.list": {"limit": 5, "sort": "username"},
        "warden.audit.list": {"limit": 5, "type": "user.updated"},
        "warden.users.get": {"id": VICTIM},
        "warden.users.update": {"id": VICTIM, "full_name": "Fuzz"},
        "warden.users.delete": {"id": VICTIM},
    }
    return valid.get(queue, {})


def mutations(fields: list[str]) -> st.SearchStrategy[Mutation]:
    names = st.sampled_from([*fields, "unknown"])
    return st.builds(Mutation, names, st.one_of(TEXT, TEXT, VALUES, DEEP))


def bodies(model: type[BaseModel], path_id: bool = False) -> st.SearchStrategy[Any]:
    """Valid requests with one hostile field; objects with the model's fields (all of them
    with hostile values of their own types, or some with anything), now and then with an
    unknown field; and JSON that is no object."""
    properties = model.model_json_schema().get("properties", {})
    if path_id:  # over HTTP the id is the path's
        properties.pop("id")
    fields = {name: IDS if name == "id" else typed(properties[name]) for name in properties}
    anything = {name: IDS if name == "id" else st.one_of(VALUES, DEEP) for name in properties}
    unknown = st.dictionaries(TEXT.filter(lambda key: key != "id"), VALUES, max_size=2)
    hostile = mutations([name for name in properties if name != "id"])
    return st.one_of(
        hostile,
        hostile,
        hostile,
        st.fixed_dictionaries(fields),
        st.fixed_dictionaries({}, optional=anything),
        st.fixed_dictionaries({**fields, "unknown": VALUES}),
        unknown,
        VALUES,
        DEEP,
    )


def queries(fields: list[str]) -> st.SearchStrategy[Any]:
    """Query strings: text for the model's fields (some left out), now and then another."""
    values = st.one_of(TEXT, SCALARS.map(str))
    given = st.fixed_dictionaries({}, optional=dict.fromkeys(fields, values))
    hostile = mutations(fields)
    return st.one_of(hostile, hostile, given, given, st.dictionaries(TEXT, values, max_size=3))


def encoded(value: Any, how: str) -> bytes:
    """JSON with surrogates escaped (\\ud800), or with their bytes raw (not UTF-8 at all)."""
    if how == "escaped":
        return json.dumps(value, ensure_ascii=True).encode()
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


HEADER_BYTES = st.binary(max_size=40).map(
    # Bytes an HTTP parser lets through (visible ASCII, space, and obs-text); control
    # characters are the parser's to refuse, and test_hostile_input checks that refusal.
    lambda raw: bytes(b if 0x20 <= b < 0x7F or b >= 0x80 else 0x2E for b in raw)
)


def percent(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def as_read(text: str) -> str:
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
