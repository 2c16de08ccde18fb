"""PII written so that a scanner reading ASCII misses it, and benign text written the same ways.

The probe set of an adversarial review (2026-12-07): every value is real (a phone ``phonenumbers``
accepts, a Luhn-valid card in an issuer range, an IBAN with a good checksum, an SSN in a valid range,
an IPv4 address, an e-mail) and is written in a chat line with one evasion: the digits of another
script or a compatibility form (circled, superscript, keycap …), invisible characters inside it
(zero-width, bidirectional marks, variation selectors, fillers), spaces and dashes of other widths, or a
separator people and scripts type between groups (``/`` after a German or Austrian area code, ``/``,
``_`` or ``.`` between a card's groups), or an e-mail spelt out with its "at" and "dot" in brackets
("jo [at] example [dot] com"). Each must be found as its type, its span covering the value.

The negatives are what the same characters write in text that holds no PII: list markers (①, ❶, 1️⃣),
footnotes and powers (x², 10¹²), dates and fractions with slashes (in any script's digits), paths and
file names, Python number literals with ``_``, products written with a middle dot, version strings,
timestamps, UUIDs, prices. Each finding there is a false positive. The scanner's known false-positive
shapes (a dotted quad, an unbroken 10-digit number that is a valid North American number) are measured
by ``run.py negatives``, not here.

``bench/pii/run.py evasions`` prints recall and the negatives' false positives;
``tests/audits/test_pii_evasions.py`` requires every value found and no negative flagged.

Left out, and why (see bench/pii/README.md): e-mails spelt out in bare words ("jo at example dot com"), HTML or
percent escapes left in text (``jo&#64;example.com``, ``jo%40example.com``), values broken over lines,
and separators that also join ordinary lists of numbers (``,``, ``:``, ``|``, ``·``).
"""

from __future__ import annotations

from collections.abc import Callable

Rewrite = Callable[[str], str]

# Values as people type them (each found by the scanner when written in ASCII).
VALUES: list[tuple[str, str, str]] = [
    # (what, type, value)
    ("US phone", "phone", "415-555-2671"),
    ("US phone, brackets", "phone", "(415) 555-2671"),
    ("UK phone", "phone", "020 7946 0958"),
    ("UK mobile", "phone", "07911 123456"),
    ("German phone", "phone", "030 12345678"),
    ("French mobile", "phone", "06 12 34 56 78"),
    ("Indian mobile", "phone", "+91 98765 43210"),
    ("Brazilian phone", "phone", "(11) 3157-5464"),
    ("international phone", "phone", "+44 20 7946 0958"),
    ("Visa", "credit_card", "4532 0151 1283 0366"),
    ("Visa, unbroken", "credit_card", "4532015112830366"),
    ("Mastercard", "credit_card", "5500-0055-5555-5559"),
    ("Amex", "credit_card", "3782 822463 10005"),
    ("IBAN", "iban", "DE89 3704 0044 0532 0130 00"),
    ("SSN", "ssn", "536-22-1234"),
    ("IPv4", "ip_address", "198.51.100.23"),
]

TEMPLATES = [
    "Hi, my {what} is {value} if you need it.",
    "you can use {value} for that",
]


def _digits_from(zero: int) -> Rewrite:
    return lambda value: "".join(chr(zero + int(char)) if char.isdigit() else char for char in value)


def _digits_as(table: str) -> Rewrite:
    """Digits written with ``table``'s characters, ``table[d]`` for the digit d."""
    return lambda value: "".join(table[int(char)] if char.isdigit() else char for char in value)


def _between_characters(mark: str) -> Rewrite:
    return lambda value: mark.join(value)


def _keycaps(value: str) -> str:
    return "".join(char + "\ufe0f\u20e3" if char.isdigit() else char for char in value)


# name → how it rewrites a value
DIGIT_FORMS = {
    "fullwidth digits": _digits_from(0xFF10),
    "Arabic-Indic digits": _digits_from(0x0660),
    "Devanagari digits": _digits_from(0x0966),
    "mathematical bold digits": _digits_from(0x1D7CE),
    "circled digits": _digits_as("\u24ea\u2460\u2461\u2462\u2463\u2464\u2465\u2466\u2467\u2468"),
    "negative circled digits": _digits_as("\u24ff\u2776\u2777\u2778\u2779\u277a\u277b\u277c\u277d\u277e"),
    "superscript digits": _digits_as("\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079"),
    "subscript digits": _digits_as("\u2080\u2081\u2082\u2083\u2084\u2085\u2086\u2087\u2088\u2089"),
    "Myanmar digits": _digits_from(0x1040),
    "Khmer digits": _digits_from(0x17E0),
    "Tamil digits": _digits_from(0x0BE6),
    "Gujarati digits": _digits_from(0x0AE6),
    "Tibetan digits": _digits_from(0x0F20),
    "keycap digits": _keycaps,
}
INVISIBLE_FORMS = {
    "zero-width space": _between_characters("\u200b"),
    "word joiner": _between_characters("\u2060"),
    "soft hyphen": _between_characters("\u00ad"),
    "left-to-right mark": _between_characters("\u200e"),
    "right-to-left mark": _between_characters("\u200f"),
    "bidi isolates": _between_characters("\u2069\u2066"),
    "invisible separator": _between_characters("\u2063"),
    "combining grapheme joiner": _between_characters("\u034f"),
    "variation selector": _between_characters("\ufe0f"),
    "Mongolian vowel separator": _between_characters("\u180e"),
    "Hangul filler": _between_characters("\u3164"),
}


def _separated(separator: str) -> Rewrite:
    return lambda value: value.replace(" ", separator).replace("-", separator)


def _dashed(dash: str) -> Rewrite:
    return lambda value: value.replace("-", dash)


SPACE_FORMS = {
    "em space": _separated("\u2003"),
    "en space": _separated("\u2002"),
    "six-per-em space": _separated("\u2006"),
    "medium mathematical space": _separated("\u205f"),
    "em dash": _dashed("\u2014"),
    "small hyphen-minus": _dashed("\ufe63"),
}

# Separators that only some values are written with: (name, separator, the values written with it).
SEPARATED = [
    ("slash after the area code", "phone", ["030/12345678", "0171/1234567", "089/12345678", "0664/1234567"]),
    ("slash between card groups", "credit_card", ["4532/0151/1283/0366", "5500/0055/5555/5559"]),
    ("underscore between card groups", "credit_card", ["4532_0151_1283_0366", "5500_0055_5555_5559"]),
    ("dot between card groups", "credit_card", ["4532.0151.1283.0366", "5500.0055.5555.5559"]),
    ("e-mail spelt out in brackets", "email",
     ["jo [at] example [dot] com", "jo(at)example(dot)co(dot)uk", "JO [AT] EXAMPLE.COM", "anna.k(at)mail.example.org"]),
]


def build_evasion_positives() -> list[tuple[str, str, str, str]]:
    """(evasion, type, line, value as written in the line), every value in every form."""
    lines = []
    forms = {**DIGIT_FORMS, **INVISIBLE_FORMS, **SPACE_FORMS}
    for evasion, rewrite in forms.items():
        for index, (what, kind, value) in enumerate(VALUES):
            written = rewrite(value)
            if written == value:
                continue  # the form does not touch this value (no space or dash to replace)
            template = TEMPLATES[index % len(TEMPLATES)]
            lines.append((evasion, kind, template.format(what=what, value=written), written))
    for evasion, kind, values in SEPARATED:
        for index, value in enumerate(values):
            template = TEMPLATES[index % len(TEMPLATES)]
            lines.append((evasion, kind, template.format(what="number", value=value), value))
    return lines


# Written so that no rule of the scanner reads them, left out on purpose (see the module docstring and
# bench/pii/README.md): (how, type, line). run.py evasions prints how many are found, outside the recall.
LEFT_OUT: list[tuple[str, str, str]] = [
    ("spelt-out e-mail, words", "email", "write to jo at example dot com please"),
    ("spelt-out e-mail, braces", "email", "write to jo {at} example {dot} com please"),
    ("HTML entity e-mail", "email", "write to jo&#64;example.com please"),
    ("percent-encoded e-mail", "email", "mailto:jo%40example.com"),
    ("JSON escape left in text", "email", "write to jo\\u0040example.com please"),
    ("card over two lines", "credit_card", "card 4532 0151\n1283 0366 thanks"),
    ("phone over two lines", "phone", "call 415-555-\n2671 thanks"),
    ("middle dots in a phone", "phone", "call 93\u00b7123\u00b745\u00b767 thanks"),
    ("commas between card groups", "credit_card", "card 4532,0151,1283,0366 thanks"),
    ("spaced slashes in a phone", "phone", "call 030 / 12345678 thanks"),
]

# (class, line): text holding no PII, written with the same characters.
NEGATIVES: list[tuple[str, str]] = [
    ("list markers", "① open the app ② tap Settings ③ choose Privacy ④ save"),
    ("list markers", "❶ backup ❷ update ❸ restart ❹ verify ❺ report"),
    ("list markers", "Steps: 1️⃣ sign in 2️⃣ pick a plan 3️⃣ pay 4️⃣ done"),
    ("list markers", "⑴ 定义 ⑵ 例子 ⑶ 练习 ⑷ 答案"),
    ("powers and footnotes", "E = mc² and a² + b² = c²; see note ¹²"),
    ("powers and footnotes", "The drive holds 10¹² bytes, about 2⁴⁰."),
    ("powers and footnotes", "H₂O and CO₂ at 10⁵ Pa, 25 °C"),
    ("powers and footnotes", "population 8 100 000 000¹ (2024 estimate²)"),
    ("dates", "The meeting is on 12/25/2024 at 10:30."),
    ("dates", "Invoice dated 2024/12/07, due 2025/01/06"),
    ("dates", "تاريخ الطلب ٢٠٢٤/١٢/٠٧ والتسليم ٢٠٢٥/٠١/١٥"),
    ("dates", "आज की तारीख ०७/१२/२०२४ है"),
    ("dates", "Born 01/02/1990, moved 03/04/2005"),
    ("dates", "Backups: 2024_12_07, 2024_12_08 and 2024_12_09"),
    ("fractions and ratios", "Add 3/4 cup of flour and 1/2 tsp salt"),
    ("fractions and ratios", "Resolution 1920/1080 scaled to 1280/720"),
    ("fractions and ratios", "The score was 21/7 and then 35/14"),
    ("fractions and ratios", "1/3 + 1/6 = 1/2, and 2/5 of 1000 is 400"),
    ("paths and file names", "See /var/log/app/2024/1207/1530/0001.log for details"),
    ("paths and file names", "saved as IMG_2024_1207_1530_0001.jpg"),
    ("paths and file names", "open data/2024/12/07/report_0001.csv"),
    ("paths and file names", "GET /api/v2/orders/4155552671/items HTTP/1.1"),
    ("number literals", "n = 1_000_000_000_000 and mask = 0xFFFF_FFFF"),
    ("number literals", "limit = 4_294_967_295  # 2**32 - 1"),
    ("number literals", "budget_2024_q4 = 125_000"),
    ("number literals", "timeout_ms = 10_000_000_000; ids = [1234_5678_9012_3456]"),
    ("dates", "Backup 0001/20241207 restored; see 2024/4155552671 in the archive"),
    ("fractions and ratios", "0/12345678 errors, 089/100 points, 1/4155552671 odds"),
    ("paths and file names", "2024/12/07/4155552671.log and thumbs/4155552671_thumb.png"),
    ("versions", "build 2024.1207.1530.0001 of 5432.1098.7654.3210"),
    ("products", "2·3·5·7 = 210 and 2·2·2·3 = 24"),
    ("products", "The area is 12·34 = 408 cm²"),
    ("versions", "Upgraded Python 3.11.4 to 3.12.1 and Django 5.2"),
    ("versions", "firmware v2.14.7-rc1 (build 20241207)"),
    ("timestamps", "2026-12-07T15:16:21Z, epoch 1733584581"),
    ("timestamps", "elapsed 00:15:30.250, next run at 12:30:45"),
    ("ids", "request id 123e4567-e89b-12d3-a456-426614174000"),
    ("ids", "commit 33895ef0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"),
    ("ids", "ISBN 978-3-16-148410-0"),
    ("prices", "Prix : 1\u202f299,99\u00a0€, livraison 4,99\u00a0€"),
    ("prices", "价格：￥１２，３４５　数量：３"),
    ("prices", "السعر ١٢٥ ريال والخصم ١٥٪"),
    ("prices", "₹ १,२५,००० only"),
    ("math", "∑ᵢ xᵢ² for i ∈ {1…12}, and 2³ = 8"),
    ("math", "Let f(x) = 3x² − 2x + 1; then f(2) = 9"),
    ("code", "for (i = 0; i < 1024; i++) buf[i] = i % 256;"),
    ("code", "assert divmod(1234, 56) == (22, 2)"),
    ("brackets around at", "Meet me (at) noon. Then [at] the station [dot] we go"),
    ("brackets around at", "see [at](https://example.com/docs) and look at example dot com"),
]
