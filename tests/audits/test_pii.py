"""PII detection: every type in varied forms, look-alikes refused, masking never reveals."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audits.pii import PII_TYPES, card_brand, count_by_type, iban_valid, luhn_valid, mask, scan_text, ssn_valid
from tests.audits.samples import LOOK_ALIKES, PLANTED, luhn_complete, sentence_with

PLANTED_CASES = [(pii_type, value) for pii_type, values in PLANTED.items() for value in values]


@pytest.mark.parametrize(("pii_type", "value"), PLANTED_CASES, ids=[f"{t}:{v[:24]}" for t, v in PLANTED_CASES])
def test_each_planted_value_is_found_once_with_its_exact_span(pii_type: str, value: str) -> None:
    text = sentence_with(value)
    matches = scan_text(text)
    assert [(m.type, m.value_in(text)) for m in matches] == [(pii_type, value)]


@pytest.mark.parametrize("value", LOOK_ALIKES)
def test_look_alikes_are_not_pii(value: str) -> None:
    assert scan_text(sentence_with(value)) == []


def test_counts_are_occurrences_not_lines() -> None:
    text = (
        "Mail john.doe@example.com, then john.doe@example.com again, or ops@example.org. "
        "Call 415-555-2671 or +44 20 7946 0958. Card 4111 1111 1111 1111; SSN 123-45-6789. "
        "Wire to DE89370400440532013000 from 10.0.0.1 or ::1 with AKIAIOSFODNN7EXAMPLE."
    )
    assert count_by_type(scan_text(text)) == {
        "email": 3, "phone": 2, "credit_card": 1, "iban": 1, "ip_address": 2, "ssn": 1, "api_key": 1,
    }  # fmt: skip


def test_every_type_is_a_key_of_the_counts_even_when_zero() -> None:
    assert count_by_type([]) == dict.fromkeys(PII_TYPES, 0)


def test_offsets_are_character_offsets_in_non_ascii_text() -> None:
    text = "Grüße — Karte 4111 1111 1111 1111, Tel. +49 30 901820, IBAN DE89370400440532013000 ✓ 123-45-6789"
    found = {(m.type, m.value_in(text)) for m in scan_text(text)}
    assert found == {
        ("credit_card", "4111 1111 1111 1111"),
        ("phone", "+49 30 901820"),
        ("iban", "DE89370400440532013000"),
        ("ssn", "123-45-6789"),
    }



@pytest.mark.parametrize("local", ["jose\u0301", "zoe\u0308", "chloe\u0301", "andre\u0301.dupont"])
def test_an_email_whose_local_part_ends_in_a_combining_accent_is_found_whole(local: str) -> None:
    # Decomposed text (NFD, as macOS writes it) puts the accent of "josé" after the "e" as U+0301,
    # which \w does not match: the address was not found at all, or found without its first part.
    text = f"write to {local}@example.com today"
    assert [(m.type, m.value_in(text)) for m in scan_text(text)] == [("email", f"{local}@example.com")]

def test_numbers_glued_to_neighbours_are_still_found() -> None:
    text = "order 12345 415-555-2671; SSN 069-22-4839 0909; ref 5535 4170 6147 137.157.250.95"
    found = [(m.type, m.value_in(text)) for m in scan_text(text)]
    assert ("phone", "415-555-2671") in found
    assert ("ssn", "069-22-4839") in found
    assert ("ip_address", "137.157.250.95") in found


def test_digits_inside_a_secret_are_not_also_a_phone() -> None:
    key = PLANTED["api_key"][-1]  # a private key block whose body contains "+4412345678901"
    assert [m.type for m in scan_text(f"key: {key}")] == ["api_key"]


def test_the_types_argument_limits_what_is_reported() -> None:
    text = "john.doe@example.com 415-555-2671 4111 1111 1111 1111"
    assert [m.type for m in scan_text(text, types=["phone"])] == ["phone"]
    with pytest.raises(ValueError, match="unknown PII types"):
        scan_text(text, types=["passport"])


def test_national_phone_formats_follow_the_regions_given() -> None:
    assert scan_text("call 030 901820 now", phone_regions=("DE",))
    assert not scan_text("call 030 901820 now", phone_regions=("US",))


@pytest.mark.parametrize(
    ("number", "brand"),
    [
        ("4111111111111111", "visa"),
        ("4222222222222", "visa"),
        ("2720990000000007", "mastercard"),
        ("378282246310005", "amex"),
        ("6011111111111117", "discover"),
        ("3530111333300000", "jcb"),
        ("30569309025904", "diners"),
        ("6759649826438453", "maestro"),
        ("6200000000000005", "unionpay"),
        ("1234567812345678", None),
    ],
)
def test_card_brand_by_issuer_range_and_length(number: str, brand: str | None) -> None:
    assert card_brand(number) == brand


def test_checksums() -> None:
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")
    assert iban_valid("GB82WEST12345698765432") and not iban_valid("GB82WEST12345698765433")
    assert not iban_valid("GB82WEST1234569876543")  # one character short for GB
    assert ssn_valid("123", "45", "6789")
    assert not any(ssn_valid(*parts) for parts in [("000", "45", "6789"), ("666", "45", "6789"), ("900", "45", "6789"), ("123", "00", "6789"), ("123", "45", "0000")])


@pytest.mark.parametrize(
    ("value", "pii_type", "masked"),
    [
        ("john.doe@example.com", "email", "j***@e***.com"),
        ("4242 4242 4242 4242", "credit_card", "****-****-****-4242"),
        ("123-45-6789", "ssn", "***-**-**89"),
        ("(415) 555-2671", "phone", "(***) ***-**71"),
        ("GB82 WEST 1234 5698 7654 32", "iban", "GB****************5432"),
        ("192.168.1.1", "ip_address", "192.***.***.***"),
        ("AKIAIOSFODNN7EXAMPLE", "api_key", "AKIA…[20 chars]"),
    ],
)
def test_masked_samples_show_the_kind_not_the_value(value: str, pii_type: str, masked: str) -> None:
    assert mask(value, pii_type) == masked


@pytest.mark.parametrize(("pii_type", "value"), PLANTED_CASES, ids=[f"{t}:{v[:24]}" for t, v in PLANTED_CASES])
def test_no_planted_value_survives_masking(pii_type: str, value: str) -> None:
    assert value not in mask(value, pii_type)


# --------------------------------------------------------------------------- properties

_digits = st.text(alphabet="0123456789", min_size=11, max_size=18)


@st.composite
def generated_pii(draw: st.DrawFn) -> tuple[str, str]:
    """A valid value of a random type, freshly generated."""
    kind = draw(st.sampled_from(["email", "credit_card", "ssn", "ip_address", "api_key"]))
    if kind == "email":
        local = draw(st.from_regex(r"[a-z][a-z0-9._+]{0,15}[a-z0-9]", fullmatch=True))
        domain = draw(st.from_regex(r"[a-z][a-z0-9]{1,10}\.(com|org|io|co\.uk)", fullmatch=True))
        return kind, f"{local}@{domain}"
    if kind == "credit_card":
        return kind, luhn_complete("4" + draw(st.text(alphabet="0123456789", min_size=14, max_size=14)))
    if kind == "ssn":
        area = draw(st.integers(1, 899).filter(lambda n: n != 666))
        return kind, f"{area:03d}-{draw(st.integers(1, 99)):02d}-{draw(st.integers(1, 9999)):04d}"
    if kind == "ip_address":
        octets = draw(st.lists(st.integers(0, 255), min_size=4, max_size=4))
        return kind, ".".join(map(str, octets))
    body = draw(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", min_size=16, max_size=16))
    return kind, "AKIA" + body


_filler = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40).map(lambda s: f" {s} ")


@settings(max_examples=150, deadline=None)
@given(planted=generated_pii(), before=_filler, after=_filler)
def test_a_planted_value_is_found_and_its_mask_never_contains_it(planted: tuple[str, str], before: str, after: str) -> None:
    pii_type, value = planted
    text = f"{before}{value}{after}"
    values = [(m.type, m.value_in(text)) for m in scan_text(text)]
    assert (pii_type, value) in values
    for found_type, found_value in values:
        assert found_value not in mask(found_value, found_type)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_matches_are_sorted_disjoint_and_inside_the_text(text: str) -> None:
    matches = scan_text(text)
    previous_end = 0
    for match in matches:
        assert previous_end <= match.start < match.end <= len(text)
        previous_end = match.end


NUMBER_CASES = [(t, v) for t, v in PLANTED_CASES if t in ("credit_card", "ssn", "phone", "iban")]


@pytest.mark.parametrize(("pii_type", "value"), NUMBER_CASES, ids=[f"{t}:{v[:24]}" for t, v in NUMBER_CASES])
def test_a_mask_shows_at_most_a_third_of_the_digits(pii_type: str, value: str) -> None:
    digits = sum(char.isdigit() for char in value)
    shown = sum(char.isdigit() for char in mask(value, pii_type))
    assert shown <= digits / 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("my number is 2125550123, call me", ("phone", "2125550123")),
        ("Phone number: 4155552671.", ("phone", "4155552671")),
        ("order 212-555-0123 is my mobile", ("phone", "212-555-0123")),  # written as a phone: a phone
        ("reach me at 06.08.20.10.11", ("phone", "06.08.20.10.11")),  # French pairs, not a date
        ("the server at 10.0.0.1 is down", ("ip_address", "10.0.0.1")),
        ("IP 192.168.1.20, version 2", ("ip_address", "192.168.1.20")),
        ("Card number 5105105105105100 expires", ("credit_card", "5105105105105100")),
        ("charge 4111 1111 1111 1111 for the build", ("credit_card", "4111 1111 1111 1111")),
    ],
)
def test_pii_is_found_in_its_own_context(text: str, expected: tuple[str, str]) -> None:
    assert [(m.type, m.value_in(text)) for m in scan_text(text)] == [expected]
