"""Credentials kept out of text people read — the config object's repr, the debug error page, error
e-mails (genesis/error_reports.py). Pure: no Django.

Connection URLs carry their password (`postgres://genesis:PW@db/genesis`, `redis://default:PW@cache:6379/0`)
and sometimes a key in the query (`?api_key=…`); the rest of the URL — scheme, user, host, port, path —
is what a person debugging needs, so only the secret part is masked."""

from __future__ import annotations

import re

MASK = "********"

# scheme://userinfo@ — the userinfo runs to the last "@" before the path, query or fragment.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s/?#]*)@")
# What may stand before an address's userinfo and is kept: its scheme, or the variable an entry names.
_ADDRESS_LEAD = re.compile(r"\s*(?:[A-Za-z][A-Za-z0-9+.\-]*://|[A-Z][A-Z0-9_]*=)?")
_SECRET_QUERY_VALUE = re.compile(
    r"(?P<name>[?&;][^=&;#\s]*(?:pass|secret|token|key|signature|auth|credential)[^=&;#\s]*=)(?P<value>[^&;#\s'\"]+)",
    re.IGNORECASE,
)


def _mask_password(match: re.Match[str]) -> str:
    user, has_password, _password = match["userinfo"].partition(":")
    return f"{match['scheme']}{user}:{MASK}@" if has_password else match[0]


def without_credentials(text: str) -> str:
    """`text` with the password of every URL in it, and query values named like secrets, replaced by
    MASK: "postgres://genesis:PW@db:5432/genesis" → "postgres://genesis:********@db:5432/genesis"."""
    if "://" not in text and "=" not in text:
        return text
    return _SECRET_QUERY_VALUE.sub(rf"\g<name>{MASK}", _USERINFO.sub(_mask_password, text))


def address_shown(value: str) -> str:
    """A value given as an address (a URL, a host list's entry, a whole list of them), as a refusal may
    quote it: all that stands between its scheme (or `NAME=`) and its last "@" masked, and query values
    named like secrets. A password may hold any character ("/", ",", a space…): only the last "@" is
    sure to end it. "VLLM_API_KEY=user:p/w@vllm:8000" → "VLLM_API_KEY=********@vllm:8000".
    The price: an "@" in a path or query masks the host before it too ("https://h.example/x?to=a@b.c" →
    "https://********@b.c"). No rule can do better without showing a secret: "https://tok/en?x@api.example"
    (a token with "/" and "?" as the user name) is the same text with other letters."""
    if "@" in value:
        userinfo_and_before, _, after = value.rpartition("@")
        lead = _ADDRESS_LEAD.match(userinfo_and_before)
        value = f"{userinfo_and_before[: lead.end() if lead else 0]}{MASK}@{after}"
    return without_credentials(value)
