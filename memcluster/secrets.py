"""Masking secrets in connection strings: the one place that knows what a password looks like.

Core functions: `redact_url` (a Redis or PostgreSQL URL, or a libpq `key=value` DSN, with
its password replaced by `***`) and `redact_text` (every such secret inside free text,
e.g. a driver's error message, plus any secret the caller knows). Backends use them for
`info()` and error messages, the cluster for its spec and logs.

Decision: mask by parsing the one string we know is a URL, and by pattern over free text;
the rejected alternative, keeping the password out of the URL in a separate option, would
break the standard `redis://:pw@host` and `postgresql://u:pw@host/db` forms users paste.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
_URL_USERINFO = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@")
_KV_SECRET = re.compile(
    r"(?i)(?P<name>\b(?:password|passwd|pwd|token|secret|sslpassword)\s*=\s*)"
    r"(?P<value>'(?:[^'\\]|\\.)*'|[^\s&;]+)")


def redact_text(text: str, *known: str | None) -> str:
    """Mask `scheme://user:pw@` userinfo and `password=...` pairs anywhere in `text`, and
    every occurrence of the `known` secrets (e.g. the password a driver echoes bare)."""
    for secret in known:
        if secret:
            text = text.replace(secret, MASK)
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _KV_SECRET.sub(lambda m: f"{m['name']}{MASK}", text)


def redact_url(url: str) -> str:
    """Return `url` (a URL or a libpq key=value DSN) with any password replaced by `***`.

    >>> redact_url("rediss://:s3cret@cache:6380/0")
    'rediss://:***@cache:6380/0'
    >>> redact_url("host=db user=app password='a b'")
    'host=db user=app password=***'
    """
    if "://" not in url:
        return redact_text(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{hostport}" if sep else f"{userinfo}@{hostport}"
    query = _KV_SECRET.sub(lambda m: f"{m['name']}{MASK}", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


__all__ = ["MASK", "redact_text", "redact_url"]
