"""Masking secrets in connection strings: the one place that knows what a password looks like.

Core functions: `redact_url` (a Redis or PostgreSQL URL, or a libpq `key=value` DSN, with
its password replaced by `***`) and `redact_text` (every such secret inside free text,
e.g. a driver's error message, plus any secret the caller knows). Backends use them for
`info()` and error messages, the cluster for its spec and logs.

How a URL's userinfo is found: it runs from `scheme://` to the LAST `@` of the URL (of the
whitespace-delimited word, in free text), not to the first `/`, `?` or `#` as a URL parser
would cut it. A password holding an unencoded `#`, `@`, `/` or `?` (`redis://:p@ss#w0rd@h`)
is therefore masked whole: `urlsplit` had cut it at `#` and shown the rest. When an `@`
sits after the host (in a path or query), more is masked than needed, never less. What
is shown of the userinfo is only a user name that cannot be mistaken for a secret: the
part before the first `:` when a password follows it and the name holds nothing but
URL-safe characters (`user:***@`, `:***@`), or a lone user name with no password (the
URL standard's and libpq's `postgresql://app@db`). Any userinfo that is malformed in any
other way is replaced whole (`***@`). `key=value` secrets (`password=`, `token=`, ...) are
masked wherever they appear, in a DSN, a query string, or a URL that holds a libpq DSN
after its `scheme://` (`postgres://host=db password=x`): a quoted value to its closing
quote (or the end, if unterminated), an unquoted one to the next unescaped whitespace, so
an unencoded `&`, `;` or `#` in it is masked too. A password in the query string of the
one URL `redact_url` is given is masked to the end of that URL (an unencoded space or `&`
in it cannot end it early), which may hide the parameters after it: more than needed,
never less.

Decision: mask by parsing the one string we know is a URL, and by pattern over free text;
the rejected alternative, keeping the password out of the URL in a separate option, would
break the standard `redis://:pw@host` and `postgresql://u:pw@host/db` forms users paste.
Already masked text stays as it is (`redact_text(redact_text(x)) == redact_text(x)`), so a
`${VAR}` reference, read as `***`, is never taken for a clear password.
"""

from __future__ import annotations

import re

MASK = "***"
_SCHEME = r"[a-zA-Z][a-zA-Z0-9+.-]*://"
_URL_USERINFO = re.compile(rf"(?P<scheme>{_SCHEME})(?P<userinfo>[^\s]*)@")
_SAFE_USER = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=%-]*")
_SECRET_NAMES = r"(?:password|passwd|pwd|token|secret|sslpassword)"
_KV_SECRET = re.compile(
    rf"(?i)(?P<name>\b{_SECRET_NAMES}\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'?|(?:\\.|\S)+)")
_QUERY_SECRET = re.compile(rf"(?is)(?P<name>[?&]{_SECRET_NAMES}=).*")


def _userinfo(info: str) -> str:
    """What may be shown of a URL's userinfo (see the module docstring)."""
    user, sep, _password = info.partition(":")
    if not _SAFE_USER.fullmatch(user):
        return MASK
    if sep:
        return f"{user}:{MASK}"
    return info  # a user name alone, no password


def redact_text(text: str, *known: str | None) -> str:
    """Mask URL userinfo and `password=...` pairs anywhere in `text`, and every occurrence
    of the `known` secrets (e.g. the password a driver echoes bare)."""
    for secret in known:
        if secret:
            text = text.replace(secret, MASK)
    text = _KV_SECRET.sub(lambda m: f"{m['name']}{MASK}", text)  # first: a value may hold @
    return _URL_USERINFO.sub(lambda m: f"{m['scheme']}{_userinfo(m['userinfo'])}@", text)


def redact_url(url: str) -> str:
    """Return `url` (a URL or a libpq key=value DSN) with any password replaced by `***`.

    >>> redact_url("rediss://:s3cret@cache:6380/0")
    'rediss://:***@cache:6380/0'
    >>> redact_url("redis://:p@ss#w0rd@cache:6379/0")
    'redis://:***@cache:6379/0'
    >>> redact_url("host=db user=app password='a b'")
    'host=db user=app password=***'
    """
    url = _QUERY_SECRET.sub(lambda m: f"{m['name']}{MASK}", url)  # a URL has no spaces:
    url = _KV_SECRET.sub(lambda m: f"{m['name']}{MASK}", url)     # to its end, then libpq's
    scheme = re.match(_SCHEME, url)
    if scheme is not None and "@" in url[scheme.end():]:
        info, _, tail = url[scheme.end():].rpartition("@")
        url = f"{scheme.group()}{_userinfo(info)}@{tail}"
    return redact_text(url)


__all__ = ["MASK", "redact_text", "redact_url"]
