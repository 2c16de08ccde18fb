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
# user:password@host without a scheme, as a host list's entry may be given ("VLLM_API_KEY=user:PW@vllm:8000"):
# where the text or a value starts (after "=", ",", a quote or white space).
_BARE_USERINFO = re.compile(r"(?P<scheme>(?:^|(?<=[\s=,'\"])))(?P<userinfo>[^\s/?#:=,'\"@]*:[^\s/?#'\"]*)@")
_SECRET_QUERY_VALUE = re.compile(
    r"(?P<name>[?&;][^=&;#\s]*(?:pass|secret|token|key|signature|auth|credential)[^=&;#\s]*=)(?P<value>[^&;#\s'\"]+)",
    re.IGNORECASE,
)


def _mask_password(match: re.Match[str]) -> str:
    user, has_password, _password = match["userinfo"].partition(":")
    return f"{match['scheme']}{user}:{MASK}@" if has_password else match[0]


def without_credentials(text: str) -> str:
    """`text` with the password of every URL in it (with or without its scheme), and query values named
    like secrets, replaced by MASK: "postgres://genesis:PW@db:5432/genesis" →
    "postgres://genesis:********@db:5432/genesis"."""
    if "@" not in text and "=" not in text:
        return text
    text = _BARE_USERINFO.sub(_mask_password, _USERINFO.sub(_mask_password, text))
    return _SECRET_QUERY_VALUE.sub(rf"\g<name>{MASK}", text)
