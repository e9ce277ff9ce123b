"""Bearer tokens bound to namespaces: parsing, checking, and never showing a token."""

from __future__ import annotations

import pytest

from memcluster.errors import ConfigError
from memcluster.integrations.auth import ENV_TOKENS, Principal, TokenTable, load_tokens

A = "tokA-0123456789abcdefXYZ"
B = "tokB_0123456789abcdef/+=="


def test_parse_lookup_and_the_authorization_header():
    table = TokenTable.parse(f"# agents\n{A}   agent-a\n\n{B} team b/agent 1 \n")
    assert table.lookup(A) == Principal("#1", "agent-a")
    assert table.lookup(B) == Principal("#2", "team b/agent 1")   # the rest of the line
    assert table.lookup(A + "x") is None and table.lookup(A[:-1]) is None
    assert table.lookup("") is None
    assert table.check(f"Bearer {A}") == Principal("#1", "agent-a")
    assert table.check(f"bearer   {B} ") == Principal("#2", "team b/agent 1")
    for bad in (None, "", A, f"Basic {A}", "Bearer", "Bearer  "):
        assert table.check(bad) is None
    assert TokenTable.parse(f"{A} x; {B} y").lookup(B).namespace == "y"   # env style


@pytest.mark.parametrize("text, message", [
    ("", "no 'TOKEN NAMESPACE' entries"),
    ("# only a comment", "no 'TOKEN NAMESPACE' entries"),
    (A, "entry 1: expected 'TOKEN NAMESPACE'"),
    ("short ns", "at least 16 characters"),
    ("bad token with spaces", "at least 16"),
    ("tok\u00e9-0123456789abcdef ns", "RFC 6750"),
    (f"{A} a\n{A} b", "entry 2: the same token is listed twice"),
])
def test_bad_token_text_fails_naming_the_entry_never_the_token(text, message):
    with pytest.raises(ConfigError) as info:
        TokenTable.parse(text)
    assert message in str(info.value)
    assert A not in str(info.value) and "0123456789abcdef" not in str(info.value)


def test_repr_and_principals_show_labels_not_tokens():
    table = TokenTable({A: "agent-a", B: "agent-b"})
    assert A not in repr(table) and B not in repr(table)
    assert repr(table) == "TokenTable(#1->'agent-a', #2->'agent-b')"
    assert [p.label for p in table.principals] == ["#1", "#2"]
    with pytest.raises(ConfigError):
        TokenTable({})
    with pytest.raises(ConfigError, match="namespace"):
        TokenTable({A: ""})


def test_load_from_file_or_environment(tmp_path):
    path = tmp_path / "tokens.txt"
    path.write_text(f"{A} from-file\n")
    assert load_tokens(path).lookup(A).namespace == "from-file"
    env = {ENV_TOKENS: f"{B} from-env"}
    assert load_tokens(None, env=env).lookup(B).namespace == "from-env"
    assert load_tokens(path, env=env).lookup(B) is None          # the file wins
    assert load_tokens(None, env={}) is None                      # no tokens: no auth
    assert load_tokens(None, env={ENV_TOKENS: "  "}) is None
    with pytest.raises(ConfigError, match="cannot be read"):
        load_tokens(tmp_path / "missing.txt")
