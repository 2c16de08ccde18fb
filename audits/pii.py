# Long: one scanner - its detectors share the byte shapes, the overlap rule and the look-alike
# normalisation, and the speed rationale below covers them together; masking is the values' other half.

"""PII and secret detection for training data: fast, validated, explainable.

Pure module (stdlib + ``phonenumbers``); no Django.  The Django layer and the
streaming audit call :func:`scan_text` and :func:`mask`.

Why it is built this way
------------------------
Training files are hundreds of megabytes, so every detector is a cheap
candidate search followed by a strict validator that only runs on candidates
(see ``bench/pii`` for the measurements):

* ``@`` is rare, so e-mails start from ``str.find("@")`` and grow outwards
  (an e-mail spelt out, "jo [at] example [dot] com", from ``str.find("at]")``
  and three more literals);
* the text's UTF-8 bytes are translated once into "shapes" in which digits
  are ``0`` and capitals ``A``: every digit run (with the separators people
  type: space, ``-``, ``.``, brackets, a leading ``+``, and ``/`` or ``_``
  in a German area code's or a card's layout) then starts at a
  literal, and so does every IBAN (``AA00``).  A run's pieces are classified
  most specific first: IPv4 (``ipaddress``), US SSN (valid ranges only),
  payment card (Luhn + issuer range + length + a layout people use), then
  phone (``phonenumbers``, only for 8–15 digits, results cached);
* IBANs (in either case) are checked against the country's length and the ISO 13616 mod-97
  checksum;
* IPv6 starts from a colon with hex digits on both sides; ``ipaddress`` decides;
* API keys and secrets are runs of 15+ key characters (another shape) that
  start with an issuer's fixed prefix (the gitleaks rules), and PEM
  ``PRIVATE KEY`` blocks.

Text that holds look-alike characters (any character Unicode gives a digit
value, fullwidth forms, every space separator and dash, invisible characters:
see "look-alike characters" below) is scanned as :func:`normalised` reads it,
the spans mapped back onto the original; ASCII text skips that check at the
cost of one O(1) ``str.isascii()``.  Not all of NFKC: a character is read as
one character (or none), never expanded ("⑴" is "1", not "(1)"), so spans map
back by the removals alone.

Counts are occurrences, never lines.  Matches never overlap: when two
detectors claim the same characters the more specific one wins.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import itertools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import phonenumbers

EMAIL = "email"
PHONE = "phone"
CREDIT_CARD = "credit_card"
IBAN = "iban"
IP_ADDRESS = "ip_address"
SSN = "ssn"
API_KEY = "api_key"

#: Every type, in the order the contract lists them.
PII_TYPES: tuple[str, ...] = (EMAIL, PHONE, CREDIT_CARD, IBAN, IP_ADDRESS, SSN, API_KEY)

# When two detectors claim overlapping text, the higher number wins: a secret's
# base64 body can contain "+4412345678901", an e-mail can contain digits.
_PRIORITY = {API_KEY: 7, EMAIL: 6, IBAN: 5, CREDIT_CARD: 4, SSN: 3, IP_ADDRESS: 2, PHONE: 1}

#: Regions whose *national* phone formats are recognised (international ``+CC``
#: and ``00CC`` numbers are recognised for every country).  Same list as
#: Presidio's default (CA shares +1 with US).  Outside North America a national
#: number counts only when written with its trunk prefix ("020 7946 0958",
#: "030 901820") or, as Brazil writes them, with the area code in brackets
#: ("(11) 3157-5464"): without that every 9–10 digit id or Unix timestamp would
#: be "a valid German mobile number".
DEFAULT_PHONE_REGIONS: tuple[str, ...] = ("US", "GB", "DE", "FR", "IL", "IN", "BR")


@dataclass(frozen=True, slots=True)
class PiiMatch:
    """One occurrence of PII: its type and its span in the scanned text."""

    type: str
    start: int
    end: int

    def value_in(self, text: str) -> str:
        return text[self.start : self.end]


# --------------------------------------------------------------------------- e-mail

# The local part is matched backwards from the "@" (on the reversed window) so
# the scan never starts a regex at every word in the text.  Combining marks
# belong to it: decomposed text (NFD) writes "josé" as "jose" + U+0301, which
# \w does not match.
_COMBINING = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
_EMAIL_LOCAL_REVERSED = re.compile(rf"[\w.%+\-'{_COMBINING}]{{1,64}}")
_EMAIL_DOMAIN_ASCII = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9\-]|\.[A-Za-z0-9])"
)
# Internationalised domains ("jo@bücher.de", "info@例え.jp") are written in
# letters of any script: a label is letters and digits (\w without "_", and
# combining marks after its first character) joined by hyphens.  Tried only
# when the ASCII pattern (a single character class, faster) fails or stops at
# a non-ASCII character.
_LABEL_CHAR = rf"[^\W_]|[{_COMBINING}]"
_EMAIL_DOMAIN = re.compile(
    rf"(?:[^\W_](?:(?:{_LABEL_CHAR}|-){{0,61}}(?:{_LABEL_CHAR}))?\.)+(?:(?:[^\W\d_]|[{_COMBINING}]){{2,24}}|xn--[A-Za-z0-9]{{1,59}})"
    rf"(?!{_LABEL_CHAR}|-|\.[^\W_])"
)


def _email_domain(text: str, start: int) -> re.Match[str] | None:
    """The domain of an e-mail whose "@" is just before ``start``. The ASCII pattern decides unless
    non-ASCII text follows what it matched; then an internationalised domain is taken only when it
    is one — not an ASCII top-level domain run into the words after it ("jo@example.comまで",
    "…@example.com電話2024", which would lose the address or swallow the words)."""
    plain = _EMAIL_DOMAIN_ASCII.match(text, start)
    if plain is not None and (plain.end() == len(text) or text[plain.end()].isascii()):
        return plain
    wide = _EMAIL_DOMAIN.match(text, start)
    if wide is None:
        return plain
    top_level = wide.group().rsplit(".", 1)[-1]
    if not top_level.isascii() and any(character.isascii() for character in top_level):
        return plain  # a top-level domain is one script or the other, never "comまで"
    return wide


def _find_emails(text: str, out: list[tuple[str, int, int]]) -> None:
    at = text.find("@")
    while at != -1:
        domain = _email_domain(text, at + 1)
        if domain is not None and at > 0:
            window_start = max(0, at - 64)
            local = _EMAIL_LOCAL_REVERSED.match(text[window_start:at][::-1])
            if local is not None:
                start = at - local.end()
                # A local part never starts or ends with a dot ("see.john@x.com"
                # still yields the address; "...@x" does not).
                while start < at and text[start] in ".'":
                    start += 1
                if start < at and text[at - 1] != ".":
                    out.append((EMAIL, start, domain.end()))
            at = text.find("@", domain.end())
        else:
            at = text.find("@", at + 1)


# E-mails spelt out to dodge address harvesters: "jo [at] example [dot] com",
# "jo(at)example(dot)com", "JO [AT] EXAMPLE.COM". Only with "at" in square or
# round brackets: bare "at" and "dot" are prose ("look at example dot
# product"). Found from four literal triggers (str.find), so ordinary text pays
# four fast searches, never a regex at every word. The "at" is spaced on both
# sides or on neither: code indexes with one and goes on after a space
# ("values[at] self.pos"). A capital "AT" is an address's only in a lower-case
# or an all-capitals address: after a name it is a country code ("Raiffeisen
# (AT) raiffeisen.at", "Siemens AG (AT) siemens.com").
_SPELT_AT_TRIGGERS = ("at]", "at)", "AT]", "AT)")
_SPELT_AT = re.compile(r" [\[(](?:at|AT)[\])] |[\[(](?:at|AT)[\])]")
_SPELT_DOT = r"(?: ?[\[(](?:dot|DOT)[\])] ?|\.)"
_SPELT_DOT_WORD = re.compile(_SPELT_DOT)
_SPELT_DOMAIN = re.compile(
    rf"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{{0,61}}[A-Za-z0-9])?{_SPELT_DOT})+[A-Za-z]{{2,24}}(?![A-Za-z0-9\-])"
)


def _find_spelt_out_emails(text: str, out: list[tuple[str, int, int]]) -> None:
    # Most texts hold no trigger. Looking for a closing bracket first (one memchr) costs a 78-character
    # sentence 0.06 µs, the four triggers alone 0.26 µs (measured with the call), the loop below more.
    if ("]" not in text and ")" not in text) or (
        "at]" not in text and "at)" not in text and "AT]" not in text and "AT)" not in text
    ):
        return
    found: set[tuple[int, int]] = set()
    for trigger in _SPELT_AT_TRIGGERS:
        position = text.find(trigger)
        while position != -1:
            at = _SPELT_AT.search(text, max(0, position - 2), position + len(trigger) + 1)
            if at is not None and at.start() > 0:
                domain = _SPELT_DOMAIN.match(text, at.end())
                local = _EMAIL_LOCAL_REVERSED.match(text[max(0, at.start() - 64) : at.start()][::-1])
                if domain is not None and local is not None:
                    start = at.start() - local.end()
                    while start < at.start() and text[start] in ".'":
                        start += 1
                    if start < at.start() and (
                        "AT" not in at.group() or _capital_at_ok(text[start : domain.end()], at.start() - start)
                    ):
                        found.add((start, domain.end()))
            position = text.find(trigger, position + 1)
    out.extend((EMAIL, start, end) for start, end in found)


def _capital_at_ok(address: str, local_length: int) -> bool:
    """Whether an address spelt out with a capital "AT" is written in lower case before it or in capitals."""
    local = address[:local_length]
    return local == local.lower() or address == address.upper()


def spelt_out_email_as_written(value: str) -> str:
    """The address an e-mail spelt out spells: "jo [at] example [dot] com" is "jo@example.com"."""
    at = _SPELT_AT.search(value)
    if at is None:
        return value
    return value[: at.start()] + "@" + _SPELT_DOT_WORD.sub(".", value[at.end() :])


# --------------------------------------------------------------------------- byte-level candidates

# Python's regex engine scans a character class at ~150 MB/s but a literal at
# GB/s.  So the text is encoded once and translated (a C table lookup) into
# "shapes" where a detector's trigger becomes a literal: every digit turns
# into "0" and every capital into "A" (a digit run starts at b"0", an IBAN at
# b"AAxx" → b"AA00"), and every key character into "a" (a secret is a run of
# 15+ key characters).  The validators then read the real text.
_SHAPE_DIGITS_CAPITALS = bytes.maketrans(
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"0" * 10 + b"A" * 26
)
_KEY_ALPHABET = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
_SHAPE_KEY_CHARS = bytes.maketrans(_KEY_ALPHABET, b"a" * len(_KEY_ALPHABET))
_SHORTEST_KEY_TOKEN = b"a" * 15
_KEY_TOKEN_RUN = re.compile(rb"a+")

# A digit run: digits joined by the separators people type (space, "-", ".",
# brackets, and "/" or "_", which join a number only in the layouts
# :func:`_card_grouping_ok` and :func:`_is_phone` accept), on the digit shape.
# A leading "+" or "(" is added afterwards.
_DIGIT_RUN_SHAPE = re.compile(rb"0(?:[ \-./_]?\(?0|\)[ \-./_]?\(?0)*\)?")
# The same run on the real bytes, refusing to start inside a word, after a "."
# (decimals, versions), a "-"/"/" (ranges, dates, paths) or a non-ASCII letter.
_DIGIT_RUN_GUARDED = re.compile(
    rb"(?<![A-Za-z0-9_.+\-/\x80-\xff])(?:\+ ?)?\(?[0-9](?:[ \-./_]?\(?[0-9]|\)[ \-./_]?\(?[0-9])*\)?"
)
_CAPITALS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_LETTERS = _CAPITALS | frozenset(b"abcdefghijklmnopqrstuvwxyz")
_WORD_BYTES = _LETTERS | frozenset(b"0123456789_") | frozenset(range(0x80, 0x100))
_RUN_BLOCKERS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.+-/")
_GROUP_SPLIT = re.compile(r"[^0-9]+")
_DIGIT_GROUPS = re.compile(r"[0-9]+")
_SSN_SHAPE = re.compile(r"([0-9]{3})([\- .])([0-9]{2})\2([0-9]{4})")
_IPV4_SHAPE = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}")


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check every payment card number satisfies."""
    total = 0
    double = False
    for char in reversed(digits):
        value = ord(char) - 48
        if double:
            value *= 2
            if value > 9:
                value -= 9
        total += value
        double = not double
    return total % 10 == 0


def card_brand(digits: str) -> str | None:
    """The scheme a card number belongs to by issuer range and length, or None.

    Ranges: Visa 4 (13/16/19), Mastercard 51–55 and 2221–2720 (16), Amex 34/37
    (15), Discover 6011/644–649/65 (16–19), JCB 3528–3589 (16–19) and the old
    2131/1800 (15), Diners 300–305/3095/36/38/39 (14–19), UnionPay 62 and 81
    (16–19), Mir 2200–2204 (16–19), Maestro 50/56–69 (12–19).
    """
    length = len(digits)
    first2 = int(digits[:2])
    first3 = int(digits[:3])
    first4 = int(digits[:4])
    if digits[0] == "4":
        return "visa" if length in (13, 16, 19) else None
    if 51 <= first2 <= 55 or 2221 <= first4 <= 2720:
        return "mastercard" if length == 16 else None
    if first2 in (34, 37):
        return "amex" if length == 15 else None
    if first4 in (2131, 1800):
        return "jcb" if length == 15 else None
    if 3528 <= first4 <= 3589:
        return "jcb" if 16 <= length <= 19 else None
    if 300 <= first3 <= 305 or first4 == 3095 or first2 in (36, 38, 39):
        return "diners" if 14 <= length <= 19 else None
    if 2200 <= first4 <= 2204:
        return "mir" if 16 <= length <= 19 else None
    if first4 == 6011 or 644 <= first3 <= 649 or first2 == 65:
        return "discover" if 16 <= length <= 19 else None
    if first2 in (62, 81):
        return "unionpay" if 16 <= length <= 19 else None
    if first2 == 50 or 56 <= first2 <= 69:
        return "maestro" if 12 <= length <= 19 else None
    return None


def ssn_valid(area: str, group: str, serial: str) -> bool:
    """SSA rules: no 000, 666 or 9xx area, no 00 group, no 0000 serial."""
    return (
        area != "000"
        and area != "666"
        and area[0] != "9"
        and group != "00"
        and serial != "0000"
    )


_CARD_LAYOUTS = frozenset({(4, 6, 5), (4, 6, 4)})  # Amex, Diners


def _card_grouping_ok(piece: str) -> bool:
    # People write cards unbroken or in fours (4-4-4-4, 4-4-4-4-3, 4-4-4-1 for a
    # 13-digit Visa), Amex/Diners as 4-6-5 / 4-6-4, with one kind of separator;
    # "6777 9365 691 814" or "3.14159…" is something else.
    if "(" in piece or ")" in piece or "+" in piece:
        return False
    separators = {char for char in piece if not char.isdigit()}
    if not separators:
        return True
    if len(separators) > 1:
        return False
    separator = separators.pop()
    groups = tuple(len(group) for group in piece.split(separator))
    if separator in "./_":
        # "4532.0151.1283.0366", "4532/0151/1283/0366", "4532_0151_1283_0366": four fours only, a
        # layout no decimal, date, version or file name has.
        return groups == (4, 4, 4, 4)
    if groups in _CARD_LAYOUTS:
        return True
    return all(size == 4 for size in groups[:-1]) and 1 <= groups[-1] <= 4


@functools.lru_cache(maxsize=1)
def _region_plans(regions: tuple[str, ...]) -> tuple[tuple[int, str, re.Pattern[str]], ...]:
    """(country code, trunk prefix, national-number pattern) per region, deduplicated by code."""
    plans = []
    seen_codes: set[int] = set()
    for region in regions:
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
        if metadata is None or metadata.country_code is None or metadata.country_code in seen_codes:
            continue
        national_pattern = metadata.general_desc.national_number_pattern if metadata.general_desc else None
        if national_pattern is None:
            continue
        seen_codes.add(metadata.country_code)
        plans.append((metadata.country_code, metadata.national_prefix or "", re.compile(national_pattern)))
    return tuple(plans)


@functools.lru_cache(maxsize=65536)
def _phone_valid(digits: str, international: bool, regions: tuple[str, ...], bracketed_area: bool = False) -> bool:
    """Whether a digit string (no separators) is a valid phone number.

    Cached: datasets repeat the same numbers (support lines, templates), and
    ``phonenumbers.is_valid_number`` costs ~15 µs.
    """
    if international:
        try:
            parsed = phonenumbers.parse("+" + digits, None)
        except phonenumbers.NumberParseException:
            return False
        return phonenumbers.is_valid_number(parsed)
    for country_code, trunk_prefix, national_pattern in _region_plans(regions):
        if trunk_prefix == "1":
            # NANP: "415 555 2671" or "1 415 555 2671".
            national = digits[1:] if len(digits) == 11 and digits[0] == "1" else digits
            if len(national) != 10:
                continue
        elif trunk_prefix:
            if digits[0] == "0" and digits[:2] != "00":
                national = digits[1:]
            elif bracketed_area:
                # Brazil writes "(11) 98765-4321": the area code in brackets, no trunk 0.
                national = digits
            else:
                continue
        else:
            national = digits
        if national_pattern.fullmatch(national) is None:
            continue
        number = phonenumbers.PhoneNumber(country_code=country_code, national_number=int(national))
        if phonenumbers.is_valid_number(number):
            return True
    return False


def _nanp_grouping_ok(run: str) -> bool:
    # North American numbers are written 3-3-4, (3) 3-4, 3-7 or unbroken, with
    # an optional leading "1": this keeps "order 12345 415-555" from passing as
    # +1 234 541 555 just because the digits happen to form a valid number.
    groups = tuple(len(group) for group in _GROUP_SPLIT.split(run) if group)
    if groups and groups[0] == 1 and len(groups) > 1:
        groups = groups[1:]
    elif groups == (11,):
        return run.lstrip("(")[0] == "1"
    return groups in {(10,), (3, 3, 4), (3, 7), (6, 4)}


# What a piece of a digit run can be.  Strong shapes are decided first
# because a neighbouring number glued on by a space ("SSN 069-22-4839 0909",
# "ref 05328 26674 3418-897937-73023") must not turn them into a "phone".
_NOT_PII = "not-pii"


def _classify_strong(piece: str, digit_count: int, group_count: int) -> str | None:
    """IPv4, SSN or card for a piece of a run; ``_NOT_PII`` for an SSN-shaped
    piece outside the valid ranges (it is never a phone either)."""
    if group_count == 4 and digit_count <= 12 and _IPV4_SHAPE.fullmatch(piece):
        try:
            ipaddress.IPv4Address(piece)
        except ValueError:
            return _NOT_PII
        return IP_ADDRESS
    if digit_count == 9 and group_count == 3:
        ssn = _SSN_SHAPE.fullmatch(piece)
        if ssn is not None:
            return SSN if ssn_valid(ssn.group(1), ssn.group(3), ssn.group(4)) else _NOT_PII
    if 12 <= digit_count <= 19 and _card_grouping_ok(piece):
        digits = "".join(_GROUP_SPLIT.split(piece))
        if card_brand(digits) is not None and luhn_valid(digits):
            return CREDIT_CARD
    return None


def _slash_layout_ok(piece: str, digit_count: int) -> bool:
    """Whether a piece holding a slash or an underscore is written as German and Austrian phones are: a trunk
    0 and an area code of one to five digits, one slash, a subscriber number ("030/12345678", "0664/1234567",
    "01/512 3456", "030/1234 5678"). Shorter is a date, a case number or a fraction ("02/01 2024",
    "Az. 0815/2024"), longer before the slash a number that ends there ("0301234567/1000")."""
    area_code, _, number = piece.partition("/")
    if "_" in piece or "/" in number or not area_code.isdigit() or not 2 <= len(area_code) <= 6:
        return False
    if area_code[0] != "0" or area_code[1] == "0":
        return False
    # Nine digits at least: eight split by a slash are a reference's NNNN/NNNN ("0815/4711", "0301/2345");
    # the few eight-digit numbers there are are still found written with a space. After a two-character
    # "area code" the subscriber number starts with three digits, never a date's two ("02/01 2024",
    # "07/12 0301"); after a longer one it may be written in pairs ("030/12 34 56 78"). Not a year
    # ("012345/2024").
    subscriber = _GROUP_SPLIT.split(number)
    if digit_count < 9 or (len(area_code) < 3 and len(subscriber[0]) < 3):
        return False
    return not (len(subscriber) == 1 and len(number) == 4 and number[:2] in ("19", "20"))


def _is_phone(piece: str, digit_count: int, regions: tuple[str, ...]) -> bool:
    if not 8 <= digit_count <= 15:
        return False
    if "/" in piece or "_" in piece:
        return _slash_layout_ok(piece, digit_count) and _phone_valid("".join(_GROUP_SPLIT.split(piece)), False, regions)
    if "." in piece and piece.count(".") + piece.count(" ") + piece.count("-") < 2:
        return False  # "0.914398414616" is a decimal; dotted phones read "415.555.2671"
    digits = "".join(_GROUP_SPLIT.split(piece))
    if piece[0] == "+":
        return _phone_valid(digits, True, regions)
    if digits.startswith("00") and "(" not in piece:
        # "00 44 20 7946 0958" / "001-415-555-2671": the international dialling prefix.
        return _phone_valid(digits[2:], True, regions)
    if digits[0] == "0" or _nanp_grouping_ok(piece):
        return _phone_valid(digits, False, regions)
    if piece[0] == "(":
        return _phone_valid(digits, False, regions, bracketed_area=True)
    return False


def _classify_run(run: str, regions: tuple[str, ...]) -> list[tuple[str, int, int]]:
    """The PII in one digit run, as (type, start, end) offsets within the run.

    Every contiguous piece of the run's digit groups is a candidate: strong
    shapes (IPv4, SSN, card) are taken first, longest first; phones are then
    looked for in what is left, longest first.
    """
    if run.isdigit():
        # Most runs are one unbroken number: a card, a phone or nothing.
        count = len(run)
        if 12 <= count <= 19 and _classify_strong(run, count, 1) is not None:
            return [(CREDIT_CARD, 0, count)]
        if 8 <= count <= 15 and _is_phone(run, count, regions):
            return [(PHONE, 0, count)]
        return []
    groups = [(m.start(), m.end()) for m in _DIGIT_GROUPS.finditer(run)]
    if len(groups) > 12:
        return _classify_long_run(run, groups, regions)
    return _take_pieces(run, groups, _run_pieces(run, groups), regions)


def _classify_long_run(run: str, groups: list[tuple[int, int]], regions: tuple[str, ...]) -> list[tuple[str, int, int]]:
    """A long list of numbers, classified in slices of 12 groups; PII is never this long."""
    found = []
    for first in range(0, len(groups), 12):
        slice_start = 0 if first == 0 else groups[first][0]
        slice_end = groups[min(first + 12, len(groups)) - 1][1]
        for kind, start, end in _classify_run(run[slice_start:slice_end], regions):
            found.append((kind, slice_start + start, slice_start + end))
    return found


def _run_pieces(run: str, groups: list[tuple[int, int]]) -> list[tuple[int, int, int, int, int]]:
    """The candidate pieces of a run, as (digit count, first group, last group, start, end), longest first
    then left to right."""
    # Numbers that are glued together are separated by spaces; a piece that
    # starts or ends at a "-" or "." cuts one of them in half ("2671 4111 …"
    # out of "415-555-2671 4111 1111 1111 1111"). A piece may end at a "/" or
    # "_" ("415-555-2671/415-555-2672") but never starts after one: what follows
    # is a path's, a date's or a fraction's next part ("2024/12/07/4155552671").
    gaps = [run[groups[index][1] : groups[index + 1][0]] for index in range(len(groups) - 1)]
    space_after = [" " in gap for gap in gaps]
    end_after = [" " in gap or "/" in gap or "_" in gap for gap in gaps]
    pieces = []
    for first in range(len(groups)):
        if first and not space_after[first - 1]:
            continue
        digit_count = 0
        for last in range(first, len(groups)):
            digit_count += groups[last][1] - groups[last][0]
            if digit_count > 19:
                break
            if (last < len(groups) - 1 and not end_after[last]) or digit_count < 4:
                continue
            start = 0 if first == 0 else groups[first][0]
            while start > 0 and run[start - 1] in "+(" and start > groups[first - 1][1]:
                start -= 1
            end = len(run) if last == len(groups) - 1 else groups[last][1]
            if end < len(run) and run[end] == ")" and "(" in run[start:end]:
                end += 1
            pieces.append((digit_count, first, last, start, end))
    pieces.sort(key=lambda piece: (piece[1] - piece[2], piece[1]))
    return pieces


def _take_pieces(
    run: str, groups: list[tuple[int, int]], pieces: list[tuple[int, int, int, int, int]], regions: tuple[str, ...]
) -> list[tuple[str, int, int]]:
    """Strong shapes first, then phones in what is left; a group belongs to at most one finding."""
    taken = [False] * len(groups)
    found: list[tuple[str, int, int]] = []
    for digit_count, first, last, _, _ in pieces:
        if any(taken[first : last + 1]):
            continue
        # Strong shapes never include a "+" or brackets: from first to last digit.
        start, end = groups[first][0], groups[last][1]
        kind = _classify_strong(run[start:end], digit_count, last - first + 1)
        if kind is not None:
            for index in range(first, last + 1):
                taken[index] = True
            if kind is not _NOT_PII:
                found.append((kind, start, end))
    for digit_count, first, last, start, end in pieces:
        if any(taken[first : last + 1]):
            continue
        if _is_phone(run[start:end], digit_count, regions):
            for index in range(first, last + 1):
                taken[index] = True
            found.append((PHONE, start, end))
    return found


def _find_digit_runs(
    raw: bytes, shape: bytes, out: list[tuple[str, int, int]], regions: tuple[str, ...]
) -> None:
    for candidate in _DIGIT_RUN_SHAPE.finditer(shape):
        start, end = candidate.span()
        length = end - start
        if length < 7:
            if (
                length >= 2
                and start > 1
                and raw[start - 1] in _LETTERS
                and raw[start - 2] in _LETTERS
                and (start == 2 or raw[start - 3] not in _WORD_BYTES)
            ):
                _add_lower_case_iban(raw, start - 2, out)  # "gb29 nwbk …", "nl91abna…", "kz86 125k …"
            continue  # "42", "2024", "3.5": shorter than the shortest IPv4 ("1.2.3.4")
        if start and raw[start - 1] == 0x28:  # "("
            start -= 1
        if start and raw[start - 1] == 0x2B:  # "+"
            start -= 1
        elif start > 1 and raw[start - 1] == 0x20 and raw[start - 2] == 0x2B:  # "+ "
            start -= 2
        if start == 0 or raw[start - 1] not in _RUN_BLOCKERS and raw[start - 1] < 0x80:
            _classify_run_span(raw, start, end, out, regions)
            continue
        if start > 1 and raw[start - 1] in _LETTERS and _iban_head(raw, start - 2):
            _add_lower_case_iban(raw, start - 2, out)  # "de89 3704 …"
        # Glued to a word ("H2O", "v1.2.3", "id42 415 555 2671"): only the part
        # of the run that starts after a space can still be PII.
        position = start
        while True:
            guarded = _DIGIT_RUN_GUARDED.search(raw, position, end)
            if guarded is None:
                break
            _classify_run_span(raw, guarded.start(), guarded.end(), out, regions)
            position = guarded.end()


def _iban_head(raw: bytes, start: int) -> bool:
    """Whether a word starts at ``start`` with a letter (the next is one too): an IBAN's country."""
    return raw[start] in _LETTERS and (start == 0 or raw[start - 1] not in _WORD_BYTES)


def _add_lower_case_iban(raw: bytes, start: int, out: list[tuple[str, int, int]]) -> None:
    """An IBAN typed in lower or mixed case, from the run of its check digits (a capitalised one is
    found by :func:`_find_ibans`)."""
    if raw[start] in _CAPITALS and raw[start + 1] in _CAPITALS:
        return
    end = _iban_end(raw, start)
    if end is not None:
        out.append((IBAN, start, end))  # the overlap rule drops what the run yields inside it


# A slash joins PII in two layouts only: a card's four groups (three slashes) and an area code before a
# subscriber number (:func:`_slash_layout_ok`); a number may also end at one. Every other piece lies between
# two slashes, so a run whose parts between them are all shorter than the shortest PII ("1.2.3.4") holds none.
_SLASH_AFTER_AREA_CODE = re.compile(r"(?<![^ ])0[1-9][0-9]{0,4}/[0-9]{3}")


def _slash_may_join_pii(run: str) -> bool:
    return (
        run.count("/") >= 3
        or max(map(len, run.split("/"))) >= 7
        or _SLASH_AFTER_AREA_CODE.search(run) is not None
    )


def _classify_run_span(
    raw: bytes, start: int, end: int, out: list[tuple[str, int, int]], regions: tuple[str, ...]
) -> None:
    run = raw[start:end].decode("ascii")
    # Brackets only belong to a run when balanced: "(415) 555-2671" yes,
    # "call me (415-555-2671)" keeps the closing bracket out.
    if run[-1] == ")" and run.count("(") < run.count(")"):
        run = run[:-1]
    if run[0] == "(" and (run.count("(") > run.count(")") or run.find(")") == len(run) - 1):
        # "(415-555-2671)": brackets around the whole number are punctuation.
        run = run[1:-1] if run[-1] == ")" and run.count("(") == run.count(")") else run[1:]
        start += 1
    if "/" in run and not _slash_may_join_pii(run):
        return  # a date or a path ("2024/12/07"), not worth classifying its every piece
    for kind, piece_start, piece_end in _classify_run(run, regions):
        out.append((kind, start + piece_start, start + piece_end))


# --------------------------------------------------------------------------- IBAN

# ISO 13616 lengths per country (SWIFT IBAN registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20,
    "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
    "YE": 30,
}  # fmt: skip

_IBAN_LENGTH_BY_PREFIX: dict[bytes, int] = {
    (a + b).encode("ascii"): length
    for country, length in IBAN_LENGTHS.items()
    for a in (country[0], country[0].lower())
    for b in (country[1], country[1].lower())
}
# Any case: people type "de89 3704 …" too; the country length and the checksum decide.
_IBAN_CANDIDATE = re.compile(rb"[A-Za-z]{2}[0-9]{2}(?: ?[A-Za-z0-9]{1,4}){3,8}")


def iban_valid(compact: str) -> bool:
    """Country length and the mod-97 checksum (ISO 7064) of an IBAN without spaces."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    numeric = "".join(str(int(char, 36)) for char in rearranged)
    return int(numeric) % 97 == 1


def _word_byte_before(raw: bytes, position: int) -> bool:
    if position == 0:
        return False
    byte = raw[position - 1]
    return byte >= 0x80 or byte == 0x5F or chr(byte).isalnum()


def _iban_end(raw: bytes, position: int) -> int | None:
    """Where the IBAN starting at ``position`` ends, or None when there is none."""
    expected = _IBAN_LENGTH_BY_PREFIX.get(raw[position : position + 2])
    if expected is None or _word_byte_before(raw, position):
        return None
    match = _IBAN_CANDIDATE.match(raw, position)
    if match is None:
        return None
    # The candidate may run into the next capitalised word; cut it at
    # the country's length, which must fall on a character boundary.
    kept = 0
    end = position
    for byte in match.group():
        if kept == expected:
            break
        end += 1
        if byte != 0x20:
            kept += 1
    if kept != expected or (end < len(raw) and (raw[end] >= 0x80 or chr(raw[end]).isalnum())):
        return None
    return end if iban_valid(raw[position:end].decode("ascii").replace(" ", "").upper()) else None


def _find_ibans(raw: bytes, shape: bytes, out: list[tuple[str, int, int]]) -> None:
    """Capitalised IBANs ("DE89 3704 …"); one typed in lower or mixed case ("de89 3704 …") is
    found from its digit run (:func:`_find_digit_runs`), which keeps this search on a literal."""
    position = shape.find(b"AA00")
    while position != -1:
        end = _iban_end(raw, position)
        if end is not None:
            out.append((IBAN, position, end))
        position = shape.find(b"AA00", position + 1 if end is None else end)


# --------------------------------------------------------------------------- API keys

# Fixed issuer prefixes (gitleaks rules); the character classes keep each
# token's alphabet so a key ends where its alphabet ends.  Matched only at the
# start of a run of key characters, so "my-sk-…" inside a longer word is not.
_API_KEY = re.compile(
    rb"sk-(?:proj-|svcacct-|admin-|ant-[a-z0-9]{2,8}-)?[A-Za-z0-9_\-]{20,}"  # OpenAI, Anthropic, Mistral-style
    rb"|[rsp]k_(?:live|test)_[A-Za-z0-9]{10,}"  # Stripe
    rb"|(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}(?![A-Za-z0-9])"  # AWS access key id
    rb"|gh[pousr]_[A-Za-z0-9]{30,}"  # GitHub classic tokens
    rb"|github_pat_[A-Za-z0-9_]{22,}"  # GitHub fine-grained tokens
    rb"|xox[abposr]-[A-Za-z0-9\-]{10,}"  # Slack
    rb"|AIza[A-Za-z0-9_\-]{35}(?![A-Za-z0-9_\-])"  # Google API key
    rb"|eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"  # JWT
)
_PRIVATE_KEY = re.compile(
    rb"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
    rb"(?:[A-Za-z0-9+/=:,\-\s\\]{0,16384}?-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
    rb"|[A-Za-z0-9+/=\s\\]{0,16384}(?<=[A-Za-z0-9+/=]))?"
)
_HAS_DIGIT = re.compile(rb"[0-9]")


def _find_api_keys(raw: bytes, out: list[tuple[str, int, int]]) -> None:
    key_shape = raw.translate(_SHAPE_KEY_CHARS)
    position = key_shape.find(_SHORTEST_KEY_TOKEN)
    while position != -1:
        token_end = _KEY_TOKEN_RUN.match(key_shape, position).end()  # type: ignore[union-attr]
        match = _API_KEY.match(raw, position)
        resume = token_end
        if match is not None:
            # "sk-learn-is-a-library-for-machine" is prose; real keys are
            # random and always contain digits.
            if not (raw.startswith(b"sk-", position) and _HAS_DIGIT.search(raw, position + 3, match.end()) is None):
                out.append((API_KEY, position, match.end()))
                resume = match.end()
        position = key_shape.find(_SHORTEST_KEY_TOKEN, resume)
    if b"-----BEGIN" in raw:
        for match in _PRIVATE_KEY.finditer(raw):
            out.append((API_KEY, match.start(), match.end()))


# --------------------------------------------------------------------------- IPv6

_IPV6_CANDIDATE = re.compile(
    r"(?:[0-9A-Fa-f]{1,4}:|:)(?:[0-9A-Fa-f]{0,4}:){1,7}"
    r"(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{1,4})?(?![0-9A-Za-z:])"
)
_HEX_OR_COLON = frozenset("0123456789abcdefABCDEF:")
_HEX_OR_COLON_OR_DOT = frozenset("0123456789abcdefABCDEF:.")


_HEX_COLON_DOT_RUN = re.compile(r"[0-9A-Fa-f:.]*")


def _find_ipv6(text: str, out: list[tuple[str, int, int]]) -> None:
    colon = text.find(":")
    while colon != -1:
        resume = colon + 1
        # An address has a hex digit or a colon on both sides of some colon;
        # "Note: …" and "12:30" fail one of the checks below at once.
        if (
            colon + 1 < len(text)
            and text[colon + 1] in _HEX_OR_COLON
            and (colon == 0 or text[colon - 1] in _HEX_OR_COLON)
        ):
            # The stretch of hex digits, colons and dots around this colon: an
            # address can only start where the stretch starts, so each stretch
            # is tried once and the scan resumes after it.
            start = colon
            while start > 0 and text[start - 1] in _HEX_OR_COLON_OR_DOT:
                start -= 1
            stretch_end = _HEX_COLON_DOT_RUN.match(text, colon).end()  # type: ignore[union-attr]
            resume = max(resume, stretch_end)
            before = text[start - 1] if start else " "
            if not (before.isalnum() or before == "_"):
                match = _IPV6_CANDIDATE.match(text, start)
                if match is not None:
                    candidate = match.group()
                    # "std::vector", "12:30:45" and "a::b" are not addresses:
                    # demand a digit and let ipaddress judge the rest.
                    if any(char.isdigit() for char in candidate):
                        try:
                            ipaddress.IPv6Address(candidate)
                        except ValueError:
                            pass
                        else:
                            out.append((IP_ADDRESS, match.start(), match.end()))
        colon = text.find(":", resume)


# --------------------------------------------------------------------------- look-alike characters

# Characters that read as ASCII punctuation, digits or nothing at all, and so
# hide PII from the detectors above (all of which look for ASCII), each read
# as the ASCII it stands for:
# - every character Unicode gives a digit value 0–9: the decimal digits of
#   every script (Arabic-Indic and Persian, as Arabic and Farsi speakers type
#   a phone or card; Devanagari, Myanmar, Khmer, Tamil …), fullwidth and the
#   "mathematical" bold/monospace digits of fancy-text generators (𝟒𝟓𝟑𝟐…),
#   and the compatibility digits NFKC reads as digits: circled ①, negative
#   circled ❶, superscript ¹ and subscript ₁ (one of these right after a digit
#   is a footnote or a power, read as a space). One character for one digit.
# - fullwidth forms (NFKC of U+FF01–FF5E is their ASCII character), the small
#   "﹫", and the full stops IDNA reads as a domain's dot (｡ 。 ﹒ ․);
# - every space separator (no-break, thin, em, ideographic …: French
#   typography groups "06 12 34 56 78" with them) as a space, every dash and
#   the minus sign as "-";
# - invisible characters removed: every format character (zero-width space /
#   joiners, word joiner, BOM, soft hyphen, bidirectional marks and isolates,
#   invisible operators, tags) and the other default-ignorable ones
#   (variation selectors, combining grapheme joiner, Hangul fillers), and the
#   keycap mark, pushed into "jo\u200b@example.com" or an RTL number to evade a
#   scan. What NFKC would expand into several characters ("⑴" → "(1)") is
#   read as one, so only removals move offsets.
# Built from the running Python's Unicode database (14.0 on 3.11) at import, in
# one pass over the planes that hold digits (plane 14's tags and variation
# selectors added by range), skipping the CJK ideographs and Hangul syllables
# (letters only, 2/5 of the pass).
_OTHER_IGNORABLE = "\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180f\u3164\uffa0\u20e3"


def _unicode_look_alikes() -> tuple[dict[str, str], frozenset[str], dict[str, str], str]:
    """From the Unicode database: the digit look-alikes (character → its digit), those of them that are
    compatibility digits (superscript, subscript, circled …: not decimal digits, Nd), the spaces and
    dashes (→ " " or "-"), and the invisible characters."""
    digits: dict[str, str] = {}
    compatibility: set[str] = set()
    spaces_and_dashes: dict[str, str] = {"\u2212": "-"}
    invisible = [*map(chr, range(0xE0000, 0xE0080)), *map(chr, range(0xE0100, 0xE01F0))]
    for char in map(chr, itertools.chain(range(0x80, 0x3400), range(0xA000, 0xAC00), range(0xD7A4, 0x20000))):
        category = unicodedata.category(char)
        if category in ("Nd", "No"):
            value = unicodedata.digit(char, None)
            if value is not None:
                digits[char] = str(value)
                if category == "No":
                    compatibility.add(char)
        elif category == "Zs":
            spaces_and_dashes[char] = " "
        elif category == "Pd":
            spaces_and_dashes[char] = "-"
        elif category == "Cf" or "\ufe00" <= char <= "\ufe0f" or char in _OTHER_IGNORABLE:
            invisible.append(char)
    return digits, frozenset(compatibility), spaces_and_dashes, "".join(invisible)


_DIGIT_LOOK_ALIKES, _COMPATIBILITY_DIGITS, _SPACES_AND_DASHES, _INVISIBLE = _unicode_look_alikes()
_LOOK_ALIKE_TABLE: dict[str, str] = {
    **{chr(code): chr(code - 0xFEE0) for code in range(0xFF01, 0xFF5F)},
    **_DIGIT_LOOK_ALIKES,
    "\ufe6b": "@",
    **dict.fromkeys("\uff61\u3002\ufe52\u2024", "."),
    **_SPACES_AND_DASHES,
    **dict.fromkeys(_INVISIBLE, ""),
}


def _char_class(chars: Iterable[str]) -> str:
    """A regex character class of ``chars``, consecutive code points as ranges."""
    runs: list[list[int]] = []
    for code in sorted(map(ord, chars)):
        if runs and runs[-1][1] == code - 1:
            runs[-1][1] = code
        else:
            runs.append([code, code])
    return "[" + "".join(re.escape(chr(a)) + ("-" + re.escape(chr(b)) if b > a else "") for a, b in runs) + "]"


_INVISIBLE_CHAR = re.compile(_char_class(_INVISIBLE))
# str.translate looks every character up in the table (~10 times slower than a scan), so the few
# look-alikes are found by a regex and replaced one by one. A class holding characters beyond U+FFFF is
# checked range by range (15× slower on French text), so the class holds the BMP ones and any astral
# character matches, to be looked up in the table (emoji map to themselves).
_LOOK_ALIKE_CHAR = re.compile(
    _char_class(char for char in _LOOK_ALIKE_TABLE if char <= "\uffff") + "|[\U00010000-\U0010ffff]"
)


def _replace_look_alike(match: re.Match[str]) -> str:
    char = match.group()
    if char in _COMPATIBILITY_DIGITS and match.start() and match.string[match.start() - 1].isdecimal():
        # Right after a digit, a superscript or circled digit is a footnote or a power ("2671¹",
        # "10¹²"), not the number's next digit: read it as a break, so the value before it stays whole.
        return " "
    return _LOOK_ALIKE_TABLE.get(char, char)


def _has_look_alike(text: str) -> bool:
    """Whether ``text`` holds a look-alike: one pass of the class (a table lookup per character); an
    astral character it matches is one only when the table says so."""
    return any(match.group() in _LOOK_ALIKE_TABLE for match in _LOOK_ALIKE_CHAR.finditer(text))


def normalised(text: str) -> str:
    """``text`` as the scanner reads it: every character with a digit value
    (other scripts, circled, superscript …) and fullwidth forms as ASCII, every
    space separator as a space and every dash as ``-``, invisible characters
    (zero-width, bidirectional marks, variation selectors …) removed."""
    return text if text.isascii() else _LOOK_ALIKE_CHAR.sub(_replace_look_alike, text)


def _scan_normalised(text: str, wanted: frozenset[str], regions: tuple[str, ...]) -> list[tuple[str, int, int]]:
    """Scan the normalised text; map the spans back onto ``text``, invisible
    characters inside a value included (so a scrub removes them with it)."""
    clean = _LOOK_ALIKE_CHAR.sub(_replace_look_alike, text)
    found = _scan(clean, wanted, regions, None)
    if not found or len(clean) == len(text):
        return found  # every replacement is one character for one: same offsets
    # The k-th removed character sat before the clean text's character at
    # (its position - k): a clean offset moves right by the removals before it.
    removed_at = [match.start() - k for k, match in enumerate(_INVISIBLE_CHAR.finditer(text))]
    return [
        (kind, start + bisect.bisect_right(removed_at, start), end + bisect.bisect_right(removed_at, end - 1))
        for kind, start, end in found
    ]


# --------------------------------------------------------------------------- public API


def _without_overlaps(matches: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """Keep one match per stretch of text: the more specific type wins."""
    if len(matches) < 2:
        return matches
    matches.sort(key=lambda m: (m[1], -m[2]))
    kept: list[tuple[str, int, int]] = []
    for match in matches:
        while kept and match[1] < kept[-1][2]:
            if _PRIORITY[match[0]] <= _PRIORITY[kept[-1][0]]:
                break
            kept.pop()
        else:
            kept.append(match)
    return kept


def _byte_to_char_offsets(raw: bytes, spans: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """Byte spans of the UTF-8 encoding → str spans, decoding each gap once."""
    positions = sorted({p for _, start, end in spans for p in (start, end)})
    char_of: dict[int, int] = {}
    byte_at = char_at = 0
    for position in positions:
        char_at += len(raw[byte_at:position].decode("utf-8"))
        byte_at = position
        char_of[position] = char_at
    return [(kind, char_of[start], char_of[end]) for kind, start, end in spans]


def scan_text(
    text: str,
    *,
    types: Iterable[str] | None = None,
    phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS,
) -> list[PiiMatch]:
    """Every PII occurrence in ``text``, sorted by position, never overlapping.

    ``types`` limits what is reported (default: all of :data:`PII_TYPES`);
    ``phone_regions`` are the ISO regions whose national phone formats count.
    Text with look-alike characters (other digits, fullwidth forms, invisible
    characters, Unicode spaces and dashes) is scanned as :func:`normalised` reads it;
    the offsets still point into ``text``.
    """
    if types is None:
        wanted = _ALL_TYPES
    else:
        wanted = frozenset(types)
        unknown = wanted - _ALL_TYPES
        if unknown:
            raise ValueError(f"unknown PII types {sorted(unknown)}; known: {', '.join(PII_TYPES)}")
    regions = phone_regions if isinstance(phone_regions, tuple) else tuple(phone_regions)
    # str.isascii() is O(1): ordinary ASCII text never pays for the look-alike check.
    if text.isascii():
        found = _scan(text, wanted, regions, None)
    elif _has_look_alike(text):
        found = _scan_normalised(text, wanted, regions)
    else:
        found = _scan(text, wanted, regions, None)
    return [PiiMatch(kind, start, end) for kind, start, end in found if kind in wanted]


def _scan(
    text: str, wanted: frozenset[str], regions: tuple[str, ...], raw: bytes | None
) -> list[tuple[str, int, int]]:
    # Detectors that work on characters (e-mail, IPv6) see the str; the others
    # see its UTF-8 bytes (see "byte-level candidates" above).
    found: list[tuple[str, int, int]] = []
    if EMAIL in wanted or API_KEY in wanted:
        # E-mails are found even when only keys are wanted, so the overlap rule
        # decides the same way whatever the selection.
        _find_emails(text, found)
        _find_spelt_out_emails(text, found)
    if IP_ADDRESS in wanted:
        _find_ipv6(text, found)
    if raw is None:
        raw = text.encode("utf-8")
    by_bytes: list[tuple[str, int, int]] = []
    shape = raw.translate(_SHAPE_DIGITS_CAPITALS)
    _find_digit_runs(raw, shape, by_bytes, regions)
    _find_ibans(raw, shape, by_bytes)
    _find_api_keys(raw, by_bytes)
    if by_bytes:
        if len(raw) != len(text):
            by_bytes = _byte_to_char_offsets(raw, by_bytes)
        found.extend(by_bytes)
    return _without_overlaps(found)


_ALL_TYPES = frozenset(PII_TYPES)


def count_by_type(matches: Iterable[PiiMatch]) -> dict[str, int]:
    """Occurrences per type, every type present (0 when none)."""
    counts = dict.fromkeys(PII_TYPES, 0)
    for match in matches:
        counts[match.type] += 1
    return counts


# --------------------------------------------------------------------------- masking

_KEY_PREFIXES = (
    "sk-proj-", "sk-ant-", "sk-", "sk_live_", "sk_test_", "rk_live_", "rk_test_", "pk_live_",
    "pk_test_", "github_pat_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "xoxb-", "xoxp-", "xoxa-",
    "xoxo-", "xoxr-", "xoxs-", "AKIA", "ASIA", "ABIA", "ACCA", "AIza", "eyJ",
)  # fmt: skip


def _star_digits(value: str, keep_last: int) -> str:
    """Replace every digit by '*' except the last ``keep_last`` digits; keep the layout."""
    total = sum(char.isdigit() for char in value)
    keep_from = total - keep_last
    seen = 0
    chars = []
    for char in value:
        if char.isdigit():
            chars.append(char if seen >= keep_from else "*")
            seen += 1
        else:
            chars.append(char)
    return "".join(chars)


def mask(value: str, pii_type: str) -> str:
    """A sample that shows what kind of thing was found but never the thing.

    ``john.doe@example.com`` → ``j***@e***.com``; a card → ``****-****-****-4242``;
    an SSN → ``***-**-**89``; a key → ``sk-…[48 chars]``.  At most the last four
    digits of a number survive, and never more than a third of them.  The value
    is masked as the scanner read it (:func:`normalised`): "jo＠example.com" as an
    e-mail.
    """
    value = normalised(value)
    if pii_type == EMAIL and "@" not in value:
        value = spelt_out_email_as_written(value)
    if pii_type == EMAIL and "@" in value:
        local, _, domain = value.rpartition("@")
        tld = domain.rsplit(".", 1)[-1] if "." in domain else ""
        masked = f"{local[:1]}***@{domain[:1]}***.{tld}"
    elif pii_type == CREDIT_CARD:
        digits = [char for char in value if char.isdigit()]
        last = "".join(digits[-4:])
        masked = "-".join(["****"] * max(1, (len(digits) - 4 + 3) // 4) + [last])
    elif pii_type == SSN:
        # 9 digits: keeping the usual last four would show 4 of 9, more than the third allowed.
        digits = [char for char in value if char.isdigit()]
        masked = "***-**-**" + "".join(digits[-2:])
    elif pii_type == PHONE:
        digit_count = sum(char.isdigit() for char in value)
        masked = _star_digits(value, keep_last=min(2, digit_count // 3))
    elif pii_type == IBAN:
        compact = value.replace(" ", "")
        masked = compact[:2] + "*" * max(0, len(compact) - 6) + compact[-4:]
    elif pii_type == IP_ADDRESS:
        if ":" in value:
            masked = value.split(":", 1)[0] + ":****:****"
        else:
            masked = value.split(".", 1)[0] + ".***.***.***"
    elif pii_type == API_KEY:
        if value.startswith("-----BEGIN"):
            masked = value.split("-----", 2)[1].join(["-----", "----- …"]) + f"[{len(value)} chars]"
        else:
            prefix = next((p for p in _KEY_PREFIXES if value.startswith(p)), "")
            masked = f"{prefix}…[{len(value)} chars]"
    else:
        masked = "*" * len(value)
    if value and value in masked:
        # Only possible for degenerate values (a value made of "*"); say what it is instead.
        masked = f"[{pii_type} masked]"
    return masked
