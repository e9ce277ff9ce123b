"""LangGraph namespaces as memcluster namespaces: `encode_namespace` / `decode_namespace`.

A LangGraph namespace `("users", "a/b")` is stored in the memcluster namespace
`langgraph/users/a%2Fb`: under a root (default "langgraph", a label LangGraph itself
reserves, so no LangGraph namespace can collide with it), labels joined with "/" as
memcluster joins tuples, and "%" and "/" inside a label escaped as %25 and %2F. The
mapping is reversible and unambiguous, and the memory tools reach the same items with
`namespace="langgraph/users/a%2Fb"`. Rejected: the raw "/"-join (("a/b",) and ("a", "b")
would collide) and an opaque encoding (unreadable for the tools).
"""

from __future__ import annotations

import re

from langgraph.store.base import MatchCondition

from memcluster.errors import InvalidValue

RESERVED = "langgraph"
_LABEL = re.compile(r"(?:[^%/]|%25|%2F)+")


def encode_namespace(namespace: tuple[str, ...], root: str = RESERVED) -> str:
    """The memcluster namespace of a LangGraph namespace: root/label/… with % and / escaped."""
    labels = (label.replace("%", "%25").replace("/", "%2F") for label in namespace)
    return "/".join((root, *labels))


def decode_namespace(namespace: str, root: str = RESERVED) -> tuple[str, ...] | None:
    """Invert `encode_namespace`; None for a namespace this root did not produce."""
    head = root + "/"
    if not namespace.startswith(head):
        return None
    labels = namespace[len(head):].split("/")
    if not all(_LABEL.fullmatch(label) for label in labels):
        return None
    return tuple(label.replace("%2F", "/").replace("%25", "%") for label in labels)


def matches_condition(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    """True if `namespace` satisfies a `list_namespaces` prefix/suffix condition ("*" = any)."""
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    if condition.match_type == "prefix":
        pairs = zip(namespace, path, strict=False)
    elif condition.match_type == "suffix":
        pairs = zip(reversed(namespace), reversed(path), strict=False)
    else:
        raise InvalidValue(f"unsupported namespace match type {condition.match_type!r}")
    return all(want == "*" or got == want for got, want in pairs)


__all__ = ["RESERVED", "decode_namespace", "encode_namespace", "matches_condition"]
