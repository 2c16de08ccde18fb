"""PII written with look-alike characters is found, scrubbed without a trace and masked in the audit.

A fuzzing round found values the scanner did not see: fullwidth "＠" and digits, zero-width characters
inside a value, no-break spaces and en-dashes as separators, internationalised domains, IBANs typed in
lower case; digits of other scripts (Arabic-Indic, Persian, Devanagari, Bengali, Thai, mathematical).  The offsets still point into the original text (the scrubber replaces by them).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audits.pii import PII_TYPES, mask, normalised, scan_text
from audits.report import audit_file
from audits.scrub import Scrubber, scrub_file
from bench.pii.evasions import NEGATIVES, build_evasion_positives
from tests.audits.samples import PLANTED, chat_line, write_lines
from tests.audits.test_audit_command import run_command


def fullwidth(value: str) -> str:
    return "".join(chr(ord(char) + 0xFEE0) if "!" <= char <= "~" else char for char in value)


def in_digits_from(zero: int, value: str) -> str:
    """``value`` with its ASCII digits written in another script's digits, ``zero`` being its 0."""
    return "".join(chr(zero + int(char)) if char.isdigit() else char for char in value)


def in_digits(table: str, value: str) -> str:
    """``value`` with each ASCII digit d written as ``table[d]`` (circled, superscript … digits)."""
    return "".join(table[int(char)] if char.isdigit() else char for char in value)


CIRCLED = "\u24ea\u2460\u2461\u2462\u2463\u2464\u2465\u2466\u2467\u2468"
NEGATIVE_CIRCLED = "\u24ff\u2776\u2777\u2778\u2779\u277a\u277b\u277c\u277d\u277e"
SUPERSCRIPT = "\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079"
SUBSCRIPT = "".join(map(chr, range(0x2080, 0x208A)))


# (what the value evades with, type, value as written, its mask in the audit report: of the value as the
# scanner reads it, so no-break spaces are spaces and dashes hyphens)
EVASIONS: list[tuple[str, str, str, str]] = [
    ("fullwidth @", "email", "jo\uff20example.com", "j***@e***.com"),
    ("fullwidth e-mail", "email", fullwidth("jo@example.com"), "j***@e***.com"),
    ("fullwidth card digits", "credit_card", fullwidth("4532015112830366"), "****-****-****-0366"),
    ("fullwidth spaced card", "credit_card", fullwidth("4532 0151 1283 0366"), "****-****-****-0366"),
    ("fullwidth phone digits", "phone", fullwidth("415-555-2671"), "***-***-**71"),
    ("zero-width space in an e-mail", "email", "jo\u200b@example.com", "j***@e***.com"),
    ("zero-width joiner in a domain", "email", "jo@exa\u200dmple.com", "j***@e***.com"),
    ("BOM in an e-mail", "email", "j\ufeffo@example.com", "j***@e***.com"),
    ("soft hyphen in an e-mail", "email", "jo\u00adhn@example.com", "j***@e***.com"),
    ("zero-width characters between card groups", "credit_card", "4532\u200c0151\u20601283\ufeff0366", "****-****-****-0366"),
    ("zero-width space inside a card", "credit_card", "45320151\u200b12830366", "****-****-****-0366"),
    ("zero-width non-joiner inside a phone", "phone", "415-555-\u200c2671", "***-***-**71"),
    ("NBSP in a French phone", "phone", "06\u00a012\u00a034\u00a056\u00a078", "** ** ** ** 78"),
    ("narrow NBSP in a French phone", "phone", "06\u202f12\u202f34\u202f56\u202f78", "** ** ** ** 78"),
    ("NBSP in an international phone", "phone", "+33\u00a06\u00a012\u00a034\u00a056\u00a078", "+** * ** ** ** 78"),
    ("NBSP between card groups", "credit_card", "4532\u00a00151\u00a01283\u00a00366", "****-****-****-0366"),
    ("narrow NBSP between card groups", "credit_card", "4532\u202f0151\u202f1283\u202f0366", "****-****-****-0366"),
    ("en-dash in a phone", "phone", "415\u2013555\u20132671", "***-***-**71"),
    ("en-dash between card groups", "credit_card", "4532\u20130151\u20131283\u20130366", "****-****-****-0366"),
    ("internationalised domain", "email", "jo@b\u00fccher.de", "j***@b***.de"),
    ("internationalised domain, decomposed", "email", "jo@bu\u0308cher.de", "j***@b***.de"),
    ("Cyrillic domain", "email", "jo@\u043f\u043e\u0447\u0442\u0430.\u0440\u0444", "j***@\u043f***.\u0440\u0444"),
    ("Arabic-Indic card digits", "credit_card", in_digits_from(0x0660, "4532 0151 1283 0366"), "****-****-****-0366"),
    ("Persian phone digits", "phone", in_digits_from(0x06F0, "415-555-2671"), "***-***-**71"),
    ("Devanagari phone digits", "phone", in_digits_from(0x0966, "+33 6 12 34 56 78"), "+** * ** ** ** 78"),
    ("Bengali card digits", "credit_card", in_digits_from(0x09E6, "4532015112830366"), "****-****-****-0366"),
    ("Thai phone digits", "phone", in_digits_from(0x0E50, "(415) 555-2671"), "(***) ***-**71"),
    ("mathematical bold card digits", "credit_card", in_digits_from(0x1D7CE, "4532015112830366"), "****-****-****-0366"),
    ("mathematical monospace phone digits", "phone", in_digits_from(0x1D7F6, "415-555-2671"), "***-***-**71"),
    ("lower-case IBAN", "iban", "de89370400440532013000", "de****************3000"),
    ("lower-case grouped IBAN", "iban", "de89 3704 0044 0532 0130 00", "de****************3000"),
    ("lower-case IBAN with letters", "iban", "gb29 nwbk 6016 1331 9268 19", "gb****************6819"),
    ("mixed-case IBAN", "iban", "Gb29NWBK60161331926819", "Gb****************6819"),
    # Its check digits run on into 1–4 more digits before a letter (was: a phone "0410 0100", or nothing).
    ("lower-case IBAN, digits after the check digits", "iban", "kz86 125k zt50 0410 0100", "kz**************0100"),
    ("lower-case IBAN, digits after the check digits, ungrouped", "iban", "kz86125kzt5004100100", "kz**************0100"),
    # An adversarial review (2026-12-07, bench/pii/evasions.py) found these still hid a value: digits
    # Unicode gives a value but the list above did not name, and invisible characters, spaces and dashes
    # outside the few named.
    ("circled phone digits", "phone", in_digits(CIRCLED, "415-555-2671"), "***-***-**71"),
    ("negative circled card digits", "credit_card", in_digits(NEGATIVE_CIRCLED, "4532 0151 1283 0366"), "****-****-****-0366"),
    ("superscript phone digits", "phone", in_digits(SUPERSCRIPT, "(415) 555-2671"), "(***) ***-**71"),
    ("subscript SSN digits", "ssn", in_digits(SUBSCRIPT, "536-22-1234"), "***-**-**34"),
    ("Myanmar phone digits", "phone", in_digits_from(0x1040, "+33 6 12 34 56 78"), "+** * ** ** ** 78"),
    ("Khmer card digits", "credit_card", in_digits_from(0x17E0, "4532015112830366"), "****-****-****-0366"),
    ("Tamil IBAN digits", "iban", in_digits_from(0x0BE6, "DE89 3704 0044 0532 0130 00"), "DE****************3000"),
    ("left-to-right marks inside a phone", "phone", "\u200e".join("415-555-2671"), "***-***-**71"),
    ("right-to-left marks between card groups", "credit_card", "4532\u200f0151\u200f1283\u200f0366", "****-****-****-0366"),
    ("bidi isolates inside an IBAN", "iban", "DE89\u2069\u2066 3704\u2069\u2066 0044 0532 0130 00", "DE****************3000"),
    ("invisible separator inside an IPv4 address", "ip_address", "198.51\u2063.100.23", "198.***.***.***"),
    ("variation selector in an e-mail", "email", "jo\ufe0f@example.com", "j***@e***.com"),
    ("Hangul filler inside a card", "credit_card", "4532\u316401511283\u31640366", "****-****-****-0366"),
    ("combining grapheme joiner inside a phone", "phone", "020 7946\u034f 0958", "*** **** **58"),
    ("em spaces between card groups", "credit_card", "4532\u20030151\u20031283\u20030366", "****-****-****-0366"),
    ("medium mathematical spaces in a French phone", "phone", "06\u205f12\u205f34\u205f56\u205f78", "** ** ** ** 78"),
    ("em dash in a phone", "phone", "415\u2014555\u20142671", "***-***-**71"),
    ("small hyphen-minus in an SSN", "ssn", "536\ufe6322\ufe631234", "***-**-**34"),
    ("small commercial at", "email", "jo\ufe6bexample.com", "j***@e***.com"),
    ("ideographic full stop in a domain", "email", "jo@example\u3002com", "j***@e***.com"),
    ("halfwidth ideographic full stop in a domain", "email", "jo@example\uff61com", "j***@e***.com"),
    # Separators that joined no number before: a slash after a German or Austrian area code, a slash, an
    # underscore or a dot between a card's four groups of four.
    ("slash after a German area code", "phone", "030/12345678", "***/******78"),
    ("slash after an Austrian mobile prefix", "phone", "0664/1234567", "****/*****67"),
    ("slashes between card groups", "credit_card", "4532/0151/1283/0366", "****-****-****-0366"),
    ("underscores between card groups", "credit_card", "5500_0055_5555_5559", "****-****-****-5559"),
    ("dots between card groups", "credit_card", "4532.0151.1283.0366", "****-****-****-0366"),
    # E-mails spelt out with "at" (and "dot") in brackets.
    ("e-mail spelt out in square brackets", "email", "jo [at] example [dot] com", "j***@e***.com"),
    ("e-mail spelt out in round brackets", "email", "jo(at)example(dot)co(dot)uk", "j***@e***.uk"),
    ("e-mail spelt out in capitals", "email", "anna.k [AT] mail.example.org", "a***@m***.org"),
]
IDS = [name for name, *_ in EVASIONS]
BEFORE, AFTER = "Please note: ", " (thanks)."


@pytest.mark.parametrize(("name", "pii_type", "value", "masked"), EVASIONS, ids=IDS)
def test_an_evasive_value_is_found_with_its_span_in_the_original_text(name: str, pii_type: str, value: str, masked: str) -> None:
    text = BEFORE + value + AFTER
    assert [(m.type, m.start, m.end) for m in scan_text(text)] == [(pii_type, len(BEFORE), len(BEFORE) + len(value))]


@pytest.mark.parametrize(("name", "pii_type", "value", "masked"), EVASIONS, ids=IDS)
def test_the_scrubbed_text_keeps_no_trace_of_an_evasive_value(name: str, pii_type: str, value: str, masked: str) -> None:
    scrubber = Scrubber()
    assert scrubber.scrub_text(BEFORE + value + AFTER) == f"{BEFORE}[{pii_type.upper()}]{AFTER}"
    # The same value written plainly gets the same pseudonym.
    pseudonyms = Scrubber(mode="pseudonym")
    assert pseudonyms.scrub_text(f"{value} / {normalised(value)}") == f"<{pii_type.upper()}_1> / <{pii_type.upper()}_1>"


@pytest.mark.parametrize(("name", "pii_type", "value", "masked"), EVASIONS, ids=IDS)
def test_the_mask_of_an_evasive_value(name: str, pii_type: str, value: str, masked: str) -> None:
    assert mask(value, pii_type) == masked


def test_the_audit_counts_evasive_values_and_masks_them_and_the_scrubbed_copy_has_none(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "s.jsonl", [chat_line(BEFORE + value + AFTER) for _, _, value, _ in EVASIONS])
    report = audit_file(source).to_contract_dict()
    expected = dict.fromkeys(PII_TYPES, 0)
    for _, pii_type, _, _ in EVASIONS:
        expected[pii_type] += 1
    assert report["pii"] == expected
    dumped = json.dumps(report, ensure_ascii=False)
    for _, _, value, _ in EVASIONS:
        assert value not in dumped and normalised(value) not in dumped
    assert report["pii_samples"]["email"][0] == {"line": 1, "masked": "j***@e***.com"}
    for pii_type in PII_TYPES:  # up to 5 samples a type, each the mask of its line's value
        for sample in report["pii_samples"][pii_type]:
            assert EVASIONS[sample["line"] - 1][1:4:2] == (pii_type, sample["masked"])

    destination = tmp_path / "d.jsonl"
    scrub_file(source=source, destination=destination)
    assert audit_file(destination).pii_counts == dict.fromkeys(PII_TYPES, 0)
    scrubbed = destination.read_text(encoding="utf-8")
    for _, _, value, _ in EVASIONS:
        assert value not in scrubbed and normalised(value) not in json.loads(json.dumps(scrubbed))
    for invisible in "\u200b\u200c\u200d\u2060\ufeff\u00ad\uff20":
        assert invisible not in scrubbed and json.dumps(invisible)[1:-1] not in scrubbed


@pytest.mark.parametrize(("pii_type", "value"), [(t, v) for t, values in PLANTED.items() for v in values])
def test_a_zero_width_space_inside_any_planted_value_does_not_hide_it(pii_type: str, value: str) -> None:
    middle = len(value) // 2
    hidden = value[:middle] + "\u200b" + value[middle:]
    text = f"see {hidden} here"
    assert [(m.type, m.value_in(text)) for m in scan_text(text)] == [(pii_type, hidden)]


@pytest.mark.parametrize(
    "text",
    [
        "pages 10\u201320 and 1990\u20132020",
        "1\u00a0000\u00a0000\u00a0\u20ac",
        "un total de 12\u202f345,67\u00a0\u20ac",
        "caf\u00e9 \u2014 \u201cquoted\u201d \u2026 text",
        "\ufeffa BOM at the start",
        "ab12 cd34 de89 and de12",
        "IDs: de89370400440532013001",  # a lower-case IBAN whose checksum fails
        "\u2460 open the app \u2461 tap Settings \u2462 save",  # list markers
        "population 8 100 000 000\u00b9 (2024 estimate\u00b2)",  # footnotes after a number
        "E = mc\u00b2, 10\u00b9\u00b2 bytes, H\u2082O",
        "\u062a\u0627\u0631\u064a\u062e \u0662\u0660\u0662\u0664/\u0661\u0662/\u0660\u0667",  # an Arabic date
        "\u7b2c1\u7ae0\u3002\u7b2c2\u7ae0\u30022024\u5e74",  # ideographic full stops between numbers
    ],
)
def test_look_alike_characters_in_ordinary_text_are_not_pii(text: str) -> None:
    assert scan_text(text) == []


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("jo@example.com\u96fb\u8a712024", "jo@example.com"),
        ("Mail: john.doe@example.com\u00e91", "john.doe@example.com"),
        ("john.doe@example.de\u00fc2", "john.doe@example.de"),
        ("\u30e1\u30fc\u30eb jo@example.com\u307e\u3067\u304a\u9858\u3044\u3057\u307e\u3059", "jo@example.com"),
        ("write to jo@b\u00fccher.de, thanks", "jo@b\u00fccher.de"),
    ],
)
def test_an_ascii_address_followed_by_non_ascii_words_is_found_and_ends_at_its_domain(text: str, address: str) -> None:
    # Was, while internationalised domains were being added: not found at all ("…com電話2024"), or run
    # on into the words after it ("…comまでお願いします"), which a scrub would then erase.
    assert [(m.type, m.value_in(text)) for m in scan_text(text)] == [("email", address)]


# The probe set of the adversarial review: every value in every form (bench/pii/evasions.py).
PROBES = build_evasion_positives()


@pytest.mark.parametrize(("evasion", "pii_type", "line", "value"), PROBES, ids=[f"{p[0]}-{i}" for i, p in enumerate(PROBES)])
def test_every_probe_value_is_found_whole(evasion: str, pii_type: str, line: str, value: str) -> None:
    start = line.index(value)
    # A keycap's marks after the last digit may stay outside the span: they hold no digit.
    end = start + len(value.rstrip("\ufe0f\u20e3"))
    found = [(m.type, m.start, m.end) for m in scan_text(line)]
    assert any(kind == pii_type and s <= start and e >= end for kind, s, e in found), found


@pytest.mark.parametrize(("name", "line"), NEGATIVES, ids=[f"{name}-{i}" for i, (name, _) in enumerate(NEGATIVES)])
def test_benign_text_written_with_the_same_characters_is_not_pii(name: str, line: str) -> None:
    assert [(m.type, m.value_in(line)) for m in scan_text(line)] == []


def test_keycap_digits_are_read_as_digits_and_scrubbed_without_a_digit_left() -> None:
    card = "".join(char + "\ufe0f\u20e3" for char in "4532015112830366")
    text = f"card {card} ok"
    assert [m.type for m in scan_text(text)] == ["credit_card"]
    scrubbed = Scrubber().scrub_text(text)
    assert not any(char.isdigit() for char in scrubbed), scrubbed


@pytest.mark.parametrize(
    ("text", "found"),
    [
        # A number still ends at a slash: the first of two phones, an address before its prefix length.
        ("call 415-555-2671/415-555-2672", [("phone", "415-555-2671")]),
        ("allow 192.168.1.0/24 only", [("ip_address", "192.168.1.0")]),
        ("card 4532 0151 1283 0366/exp 04/27", [("credit_card", "4532 0151 1283 0366")]),
        # Never a number across a slash or an underscore unless in a layout people write one in.
        ("due 01/02/2024, ratio 0/12345678, odds 1/4155552671", []),
        ("ids 4532/015112830366 and 4532_0151_1283_036", []),
        ("files 2024/12/07/4155552671.log", []),
    ],
)
def test_slashes_and_underscores_join_a_number_only_in_its_layouts(text: str, found: list[tuple[str, str]]) -> None:
    assert [(m.type, m.value_in(text)) for m in scan_text(text)] == found


@pytest.mark.parametrize("as_json", [False, True])
def test_the_commands_output_shows_every_evasive_value_masked_only(tmp_path: Path, as_json: bool) -> None:
    # What people read (the admin page and the API show the same masked samples as the report).
    source = write_lines(tmp_path / "s.jsonl", [chat_line(BEFORE + value + AFTER) for _, _, value, _ in EVASIONS])
    code, out, _ = run_command(str(source), *(["--json"] if as_json else []))
    assert code == 1
    shown = out if not as_json else json.dumps(json.loads(out), ensure_ascii=False)
    assert "j***@e***.com" in shown and "****-****-****-0366" in shown
    # Read as the scanner reads it, so no look-alike written into a sample could carry a value out either.
    for _, _, value, _ in EVASIONS:
        assert value not in shown and normalised(value) not in normalised(shown)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("Call 415-555-2671\u00b9 for details", ("phone", "415-555-2671")),
        ("card 4532 0151 1283 0366\u00b2.", ("credit_card", "4532 0151 1283 0366")),
        ("SSN 536-22-1234\u2460 on file", ("ssn", "536-22-1234")),
        ("from 198.51.100.23\u00b9\u00b2", ("ip_address", "198.51.100.23")),
        ("call 4155552671\u00b9\u00b2", ("phone", "4155552671")),
    ],
)
def test_a_footnote_after_a_value_is_not_its_next_digit(text: str, found: tuple[str, str]) -> None:
    # Once superscript and circled digits read as digits, "2671¹" read as "26711": the phone and the SSN
    # were lost and the card became a phone whose span left "4532 " in a scrub.
    assert [(m.type, m.value_in(text)) for m in scan_text(text)] == [found]
    assert Scrubber().scrub_text(text) == text.replace(found[1], f"[{found[0].upper()}]")


def test_an_e_mail_spelt_out_gets_the_pseudonym_of_the_address_it_spells() -> None:
    scrubber = Scrubber(mode="pseudonym")
    assert scrubber.scrub_text("jo [at] example [dot] com, Jo@Example.com") == "<EMAIL_1>, <EMAIL_1>"


@pytest.mark.parametrize(
    ("text", "found"),
    [
        # A day/month date then a year, a time or a number: a date's parts are two digits, a subscriber number
        # after a German or Austrian area code at least three.
        ("due 02/01 2024 ok", []),
        ("due 02/01 1530 ok", []),
        ("07/12 0301/2345", []),
        ("on 07/12 10115 Berlin", []),
        # A zero-padded case number over its year.
        ("Az. 0815/2024", []),
        ("Az. 012345/2024", []),
        # An area code has at most five digits after the trunk 0: a number before a slash ends there.
        ("ratio 0301234567/1000", [("phone", "0301234567")]),
    ],
)
def test_a_slash_joins_a_phone_only_after_an_area_code_and_before_its_subscriber_number(
    text: str, found: list[tuple[str, str]]
) -> None:
    assert [(m.type, m.value_in(text)) for m in scan_text(text)] == found


@pytest.mark.parametrize(
    "text",
    [
        # A capital "(AT)" after a name is a country code; a lower-case or an all-capitals address keeps it.
        "Raiffeisen (AT) raiffeisen.at",
        "Vienna (AT) erstegroup.com is a bank",
        "Siemens AG (AT) siemens.com",
        # Code indexes with "[at]" and goes on after a space; a spelt-out "at" is spaced on both sides or neither.
        "x = values[at] self.pos",
    ],
)
def test_an_e_mail_spelt_out_is_not_a_country_code_or_an_index(text: str) -> None:
    assert [(m.type, m.value_in(text)) for m in scan_text(text)] == []


@pytest.mark.parametrize(
    ("text", "value"),
    [
        # What the rules above keep (the probe set holds the others): a subscriber number grouped after the
        # slash, a lower-case or an all-capitals address with a capital "AT", "at" unspaced on both sides.
        ("Berlin 030/1234 5678 ok", "030/1234 5678"),
        # Written in pairs after an area code of three digits or more (a third look: lost to the rule above).
        ("call 089/12 34 56 7 ok", "089/12 34 56 7"),
        ("call 030/12 34 56 78 ok", "030/12 34 56 78"),
        ("call 0221/98 76 54 3 ok", "0221/98 76 54 3"),
        ("call 0664/12 34 567 ok", "0664/12 34 567"),
        ("write anna.k [AT] mail.example.org", "anna.k [AT] mail.example.org"),
        ("write JO [AT] EXAMPLE.COM", "JO [AT] EXAMPLE.COM"),
        ("write jo[at]example[dot]com", "jo[at]example[dot]com"),
    ],
)
def test_the_slash_and_bracket_layouts_people_write_are_still_found(text: str, value: str) -> None:
    assert [m.value_in(text) for m in scan_text(text)] == [value]
