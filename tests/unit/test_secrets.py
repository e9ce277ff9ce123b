"""Masking secrets (issue 15, item 7): no part of a password shows, however malformed the
URL or DSN around it (unencoded `#`, `@`, `/`, `?`, `&`, quotes, spaces). Seeded from
MEMCLUSTER_TEST_SEED (printed in the pytest header) for replay."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, seed, settings
from hypothesis import strategies as st

from memcluster.secrets import redact_text, redact_url

SEED = int(os.environ.get("MEMCLUSTER_TEST_SEED", "0"))
MARK = "Zq7"  # in every generated password, in no host, user or scheme
PIECES = [MARK, MARK, "#", "@", "/", "?", ":", "%", "%40", "&", ";", "=", "'", '"', "\\",
          " ", "+", "[", "]", "$", "*", "é"]
passwords = st.lists(st.sampled_from(PIECES), min_size=1, max_size=7).map(
    lambda parts: "".join(parts) + MARK)


def _quoted(password: str) -> str:
    """A libpq key=value value: quoted, with quotes and backslashes escaped."""
    return "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"


FORMS = [
    lambda pw: f"redis://:{pw}@cache:6379/0",
    lambda pw: f"rediss://app:{pw}@cache.internal:6380/1",
    lambda pw: f"postgresql://app:{pw}@db:5432/agents?sslmode=require",
    lambda pw: f"postgres://app:{pw}@db/agents#frag",
    lambda pw: f"host=db user=app password={_quoted(pw)} dbname=agents",
    lambda pw: f"postgres://host=db password={_quoted(pw)} user=app",
    lambda pw: f"postgresql://db/agents?user=app&password={pw}",
]


@seed(SEED)
@settings(max_examples=300, deadline=None)
@given(password=passwords, form=st.sampled_from(range(len(FORMS))))
def test_no_part_of_a_password_shows_in_any_form(password, form):
    url = FORMS[form](password)
    shown = redact_url(url)
    assert MARK not in shown, (url, shown, f"MEMCLUSTER_TEST_SEED={SEED}")
    assert "***" in shown
    assert redact_url(shown) == shown, "masking twice changes nothing"
    in_text = redact_text(f"connection to {url} failed", password)
    assert MARK not in in_text, (url, in_text)


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:p@ss#w0rd@cache:6379/0", "redis://:***@cache:6379/0"),  # item 7's leak
    ("redis://:ab/cd?ef@h:6379/0", "redis://:***@h:6379/0"),
    ("redis://we#ird:pw@h/0", "redis://***@h/0"),           # a malformed user: all masked
    ("redis://app:pw@h/0", "redis://app:***@h/0"),          # a plain user stays readable
    ("postgresql://postgres@db:5432/test", "postgresql://postgres@db:5432/test"),
    ("postgres://host=db password=se#cret user=x", "postgres://host=db password=*** user=x"),
    ("host=db password='unterminated rest", "host=db password=***"),
    ("host=db password=a\\ b x=1", "host=db password=*** x=1"),
])
def test_7_malformed_urls_and_dsns_are_masked_whole(url, shown):
    """Item 7: `urlsplit` cut the userinfo at an unencoded `#` and showed the rest."""
    assert redact_url(url) == shown


def test_a_masked_env_reference_is_not_mistaken_for_a_secret():
    """The coordinator refuses a spec whose strings change when masked; a `${VAR}`, read as
    `***`, must stay as it is."""
    for probe in ("redis://:***@redis:6379/0", "postgresql://app:***@db/x",
                  "redis://***@h", "host=db password=***"):
        assert redact_text(probe) == probe
