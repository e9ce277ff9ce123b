"""Bearer tokens for memcluster's HTTP servers, each bound to a namespace: `TokenTable`.

    tokens = TokenTable.parse(Path("tokens.txt").read_text())   # or load_tokens(path, env)
    principal = tokens.check(request.headers.get("authorization"))
    if principal is None: ...401...
    principal.namespace   # the only namespace this caller may touch

    # tokens.txt: one binding per line, "#" starts a comment
    3f9c2d0b8e7a4c1d9b6e5f4a3c2b1d0e  agent-7
    Zm9vYmFyYmF6cXV4cXV1eHh4eHh4eHh4  team-a/agent-1

Core types: `TokenTable` (the bindings, parsed and validated) and `Principal` (who a request
is: a token's label, never the token, and its namespace). Used by `memcluster mcp --http`
and meant for the REST server, so both check tokens the same way.

Decisions:

- **One namespace per token.** A caller never picks a namespace; the server scopes every
  call to the token's. Rejected: tokens with scopes over several namespaces, which puts
  the tenant boundary into every call's arguments, where a prompt injection can reach it.
- **Constant time.** The presented token is hashed (SHA-256) and compared with every
  stored digest by `hmac.compare_digest`, always all of them, so neither the content nor
  the length of a valid token leaks through timing. Only digests are kept in memory.
- **Tokens never appear in output.** Errors name the line, `repr` shows labels ("#1",
  "#2", ...) and namespaces; a principal carries its label. Tokens must look like RFC 6750
  bearer tokens and be at least `MIN_TOKEN_LENGTH` characters: a short token is a guessable
  one, refused at start rather than accepted quietly.
- Entries are separated by newlines or ";" (so an environment variable can hold several);
  a namespace is the rest of the entry after the first run of whitespace, trimmed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from memcluster import codec
from memcluster.errors import ConfigError, InvalidKey

ENV_TOKENS = "MEMCLUSTER_TOKENS"
MIN_TOKEN_LENGTH = 16
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_ENTRY_SEP = re.compile(r"[;\n]")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the token's label ("#3", its position) and its namespace."""

    label: str
    namespace: str


class TokenTable:
    """Bearer tokens and the namespace each is bound to (see the module docstring)."""

    def __init__(self, bindings: Mapping[str, str]) -> None:
        if not bindings:
            raise ConfigError("tokens: at least one token is required")
        entries: list[tuple[bytes, Principal]] = []
        seen: set[bytes] = set()
        for n, (token, namespace) in enumerate(bindings.items(), start=1):
            where = f"tokens entry {n}"
            if not isinstance(token, str) or not _B64TOKEN.fullmatch(token):
                raise ConfigError(f"{where}: a token must be letters, digits and -._~+/ "
                                  "(RFC 6750), optionally ending in '='")
            if len(token) < MIN_TOKEN_LENGTH:
                raise ConfigError(f"{where}: a token must be at least {MIN_TOKEN_LENGTH} "
                                  "characters (generate one: python -c 'import secrets; "
                                  "print(secrets.token_urlsafe(32))')")
            if not isinstance(namespace, str) or not namespace:
                raise ConfigError(f"{where}: the namespace must be a non-empty str")
            try:
                codec.check_namespace(namespace)
            except InvalidKey as exc:
                raise ConfigError(f"{where}: {exc}") from None
            digest = _digest(token)
            if digest in seen:
                raise ConfigError(f"{where}: the same token is listed twice")
            seen.add(digest)
            entries.append((digest, Principal(f"#{n}", namespace)))
        self._entries = tuple(entries)

    @classmethod
    def parse(cls, text: str, source: str = "tokens") -> TokenTable:
        """Parse "TOKEN NAMESPACE" entries (newline- or ;-separated; a line starting with
        '#' is a comment)."""
        bindings: dict[str, str] = {}
        for n, raw in enumerate(_ENTRY_SEP.split(text), start=1):
            entry = raw.strip()
            if not entry or entry.startswith("#"):  # blank, or a whole-line comment
                continue
            parts = entry.split(None, 1)
            if len(parts) != 2:
                raise ConfigError(f"{source} entry {n}: expected 'TOKEN NAMESPACE'")
            token, namespace = parts[0], parts[1].strip()
            if token in bindings:
                raise ConfigError(f"{source} entry {n}: the same token is listed twice")
            bindings[token] = namespace
        if not bindings:
            raise ConfigError(f"{source}: no 'TOKEN NAMESPACE' entries found")
        return cls(bindings)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        shown = ", ".join(f"{p.label}->{p.namespace!r}" for _, p in self._entries)
        return f"TokenTable({shown})"

    @property
    def principals(self) -> list[Principal]:
        return [p for _, p in self._entries]

    def lookup(self, token: str) -> Principal | None:
        """The principal `token` belongs to, or None; constant time in `token`."""
        presented = _digest(token)
        found: Principal | None = None
        for digest, principal in self._entries:  # always every entry: no early exit
            if hmac.compare_digest(presented, digest):
                found = principal
        return found

    def check(self, authorization: str | None) -> Principal | None:
        """The principal of an `Authorization: Bearer <token>` header value, or None."""
        if not authorization:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.lookup(token.strip())


def load_tokens(path: str | Path | None = None, *, env: Mapping[str, str] | None = None
                ) -> TokenTable | None:
    """The tokens from `path` if given, else from $MEMCLUSTER_TOKENS, else None (no auth)."""
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"token file {str(path)!r} cannot be read: "
                              f"{exc.strerror or type(exc).__name__}") from None
        return TokenTable.parse(text, source=f"token file {str(path)!r}")
    text = (os.environ if env is None else env).get(ENV_TOKENS)
    if text is None or not text.strip():
        return None
    return TokenTable.parse(text, source=f"${ENV_TOKENS}")


__all__ = ["ENV_TOKENS", "MIN_TOKEN_LENGTH", "Principal", "TokenTable", "load_tokens"]
