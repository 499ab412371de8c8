"""Rails-style bracketed form names to nested dicts.

``tune[images][]``, ``tune[images][0]``, ``tune[prompts_attributes][][text]`` and
friends become the same nested structure a JSON body has. The grouping rule for
``x[][k]`` is Rack's: a value joins the last hash of the array unless that hash
already has the key, in which case a new hash starts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from .errors import BadRequest

_NAME = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def split_name(name: str) -> list[str]:
    """``a[b][][c]`` → ``["a", "b", "", "c"]``; a malformed name is a 400."""
    match = _NAME.match(name)
    if match is None:
        raise BadRequest(f"malformed parameter name {name!r}")
    head, brackets = match.groups()
    return [head, *re.findall(r"\[([^\[\]]*)\]", brackets)]


def decode_pairs(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Fold ``(name, value)`` pairs, in order, into one nested dict."""
    root: dict[str, Any] = {}
    for name, value in pairs:
        _assign(root, split_name(name), value, name)
    nested = _listify(root)
    if not isinstance(nested, dict):
        raise BadRequest("form parameter names must start with a name, not an index")
    return nested


def _assign(target: dict[str, Any], keys: list[str], value: Any, name: str) -> None:
    key, rest = keys[0], keys[1:]
    if not rest:
        _put(target, key, value, name)
        return
    if rest[0] == "":
        items = target.setdefault(key, [])
        if not isinstance(items, list):
            raise BadRequest(f"conflicting parameter {name!r}: {key!r} is not an array")
        tail = rest[1:]
        if not tail:
            items.append(value)
            return
        last = items[-1] if items else None
        if not isinstance(last, dict) or _has_path(last, tail):
            last = {}
            items.append(last)
        _assign(last, tail, value, name)
        return
    child = target.setdefault(key, {})
    if not isinstance(child, dict):
        raise BadRequest(f"conflicting parameter {name!r}: {key!r} is not a hash")
    _assign(child, rest, value, name)


def _put(target: dict[str, Any], key: str, value: Any, name: str) -> None:
    if isinstance(target.get(key), dict | list):
        raise BadRequest(f"conflicting parameter {name!r}: {key!r} is a hash or an array")
    target[key] = value


def _has_path(node: dict[str, Any], keys: list[str]) -> bool:
    key = keys[0]
    if key not in node:
        return False
    if len(keys) == 1 or keys[1] == "":
        return True
    child = node[key]
    return isinstance(child, dict) and _has_path(child, keys[1:])


def _listify(node: Any) -> Any:
    """Hashes keyed only by indexes (``x[0]``, ``x[1]``) become lists, in index order."""
    if isinstance(node, list):
        return [_listify(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _listify(value) for key, value in node.items()}
    if converted and all(key.isdigit() for key in converted):
        return [converted[key] for key in sorted(converted, key=int)]
    return converted
