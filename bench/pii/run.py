"""PII scanner and full-audit benchmarks (not part of the test run).

    .venv/bin/python bench/pii/run.py scan  [--mb 3] [--seed 7] [--skip-presidio] [--skip-scrubadub]
    .venv/bin/python bench/pii/run.py negatives [--per-class 1000] [--seed 7] [--examples 2]
    .venv/bin/python bench/pii/run.py context [--per-type 20] [--seed 7]
    .venv/bin/python bench/pii/run.py evasions
    .venv/bin/python bench/pii/run.py audit [--mb 100] [--workers 2] [--seed 7] [--keep FILE]
    .venv/bin/python bench/pii/run.py audit --shape short [--lines 1000000] [--workers 2] [--keep FILE]

``scan`` builds a seeded Faker corpus of chat-like documents with PII of every
type planted at known offsets (plus look-alikes that are *not* PII: Luhn-invalid
cards, 000-/666-/9xx SSNs, bad IBAN checksums, 300.1.2.3, timestamps, dates,
prices), scans it on one core with our scanner, with Presidio (AnalyzerEngine,
no-op NLP engine, score threshold 0.3) and with scrubadub, and prints MB/s,
per-type recall and precision, and the speed ratios.

``negatives`` scans benign hard negatives (``bench/pii/negatives.py``: version strings, section
numbers, order / ticket / build ids, byte counts, timestamps, hashes, SKUs, Luhn-valid ids that are not
cards, grouped quantities, decimals, dates) and prints the share of lines flagged per class and per
type, and the share of files a single finding would block.

``context`` scans real PII written in support-chat contexts (``bench/pii/context_positives.py``: an id
word before a phone or card, a rule or step word before an address, letters glued to a number) and prints
the recall per type and every line missed; the test suite requires 1.0.

``evasions`` scans real PII written to evade an ASCII scanner (``bench/pii/evasions.py``: other scripts'
digits and compatibility digits, invisible characters inside a value, other spaces and dashes, ``/``,
``_`` and ``.`` separators) and benign text written with the same characters; it prints recall per
evasion, the negatives' false positives, and every miss and false positive (masked).

``audit`` writes a ~N MB chat JSONL (duplicates, near duplicates, format errors,
PII, easy to hard examples) and times ``audits.report.audit_file`` on it: wall
time and peak RSS of the parent and of the workers.

Install the baselines with ``.venv/bin/pip install -r requirements-bench.txt``.
When one cannot be imported the output says so; no number is ever made up.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import json
import os
import random
import resource
import string
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from audits import pii  # noqa: E402
from bench.pii.context_positives import build_context_positives  # noqa: E402
from bench.pii.evasions import LEFT_OUT as EVASIONS_LEFT_OUT  # noqa: E402
from bench.pii.evasions import NEGATIVES as EVASION_NEGATIVES  # noqa: E402
from bench.pii.evasions import build_evasion_positives  # noqa: E402
from bench.pii.negatives import build_negatives  # noqa: E402

TYPES = pii.PII_TYPES


# --------------------------------------------------------------------------- corpus


@dataclass
class Document:
    text: str
    truth: list[tuple[str, int, int]] = field(default_factory=list)


def luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for check in string.digits:
        if pii.luhn_valid(body + check):
            return body + check
    raise AssertionError("unreachable")


CARD_PLANS = [  # (scheme, prefixes, lengths) — every major range the issue names
    ("visa", ["4"], [13, 16, 19]),
    ("mastercard", ["51", "52", "53", "54", "55"], [16]),
    ("mastercard-2", ["2221", "2300", "2500", "2720"], [16]),
    ("amex", ["34", "37"], [15]),
    ("discover", ["6011", "644", "65"], [16]),
    ("jcb", ["3528", "3550", "3589"], [16]),
    ("diners", ["300", "305", "36", "38"], [14]),
    ("maestro", ["5018", "5020", "6304", "6759", "6761"], [12, 16, 19]),
    ("unionpay", ["62"], [16, 19]),
]


def format_card(number: str, rng: random.Random) -> str:
    style = rng.choice(["plain", "space", "dash"])
    if style == "plain":
        return number
    if len(number) == 15:
        groups = [number[:4], number[4:10], number[10:]]
    else:
        groups = [number[i : i + 4] for i in range(0, len(number), 4)]
    return (" " if style == "space" else "-").join(groups)


def random_token(rng: random.Random, length: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(rng.choice(alphabet) for _ in range(length))


def make_api_key(rng: random.Random) -> str:
    kind = rng.randrange(10)
    b62 = string.ascii_letters + string.digits
    if kind == 0:
        return "sk-" + random_token(rng, 48)
    if kind == 1:
        return "sk-proj-" + random_token(rng, 64, b62 + "_-") + str(rng.randrange(10))
    if kind == 2:
        return "AKIA" + random_token(rng, 16, string.ascii_uppercase + string.digits)
    if kind == 3:
        return rng.choice(["ghp_", "gho_"]) + random_token(rng, 36)
    if kind == 4:
        return "github_pat_" + random_token(rng, 22) + "_" + random_token(rng, 59)
    if kind == 5:
        return f"xoxb-{rng.randrange(10**11, 10**12)}-{rng.randrange(10**11, 10**12)}-" + random_token(rng, 24)
    if kind == 6:
        return "AIza" + random_token(rng, 35, b62 + "_-")
    if kind == 7:
        return rng.choice(["sk_live_", "rk_live_", "pk_live_"]) + random_token(rng, 24)
    if kind == 8:
        import base64

        def b64(data: dict) -> str:
            return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

        header = b64({"alg": "HS256", "typ": "JWT"})
        payload = b64({"sub": str(rng.randrange(10**9)), "name": "x" * rng.randrange(3, 12)})
        return f"{header}.{payload}." + random_token(rng, 43, b62 + "_-")
    body = "\n".join(random_token(rng, 64, b62 + "+/") for _ in range(rng.randrange(3, 8)))
    return f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----"


class PiiFactory:
    """Valid PII values of every type, in the forms people type them."""

    def __init__(self, seed: int) -> None:
        import phonenumbers
        from faker import Faker

        self.rng = random.Random(seed)
        self.fakers = {locale: Faker(locale) for locale in ["en_US", "en_GB", "de_DE", "fr_FR", "nl_NL", "es_ES", "it_IT", "en_IN", "pt_BR"]}
        for offset, faker in enumerate(self.fakers.values()):
            faker.seed_instance(seed + offset)
        self.phonenumbers = phonenumbers

    def email(self) -> str:
        faker = self.fakers[self.rng.choice(["en_US", "en_GB", "de_DE"])]
        value = self.rng.choice([faker.email, faker.free_email, faker.company_email])()
        if self.rng.random() < 0.2:
            local, domain = value.split("@")
            value = f"{local}+{self.rng.choice(['news', 'work', 'x1'])}@{domain}"
        return value

    def phone(self) -> str:
        pn = self.phonenumbers
        while True:
            locale = self.rng.choice(["en_US", "en_US", "en_GB", "en_GB", "de_DE", "fr_FR", "en_IN", "pt_BR"])
            region = {"en_US": "US", "en_GB": "GB", "de_DE": "DE", "fr_FR": "FR", "en_IN": "IN", "pt_BR": "BR"}[locale]
            raw = self.fakers[locale].phone_number()
            try:
                parsed = pn.parse(raw, region)
            except pn.NumberParseException:
                continue
            if not pn.is_valid_number(parsed):
                continue
            style = self.rng.random()
            national = pn.format_number(parsed, pn.PhoneNumberFormat.NATIONAL)
            if region != "US" and not national.startswith(("0", "(")):
                # phonenumbers has no national layout for a few ranges and prints
                # the bare number ("169961853" for German 01699 61853); nobody
                # writes it so, and our scanner by design only counts national
                # numbers with their trunk prefix.  Plant the international form.
                style = 0.5
            if style < 0.4:
                if region == "US" and self.rng.random() < 0.5:
                    digits = str(parsed.national_number)
                    national = self.rng.choice(
                        [f"{digits[:3]}-{digits[3:6]}-{digits[6:]}", f"{digits[:3]}.{digits[3:6]}.{digits[6:]}", digits]
                    )
                return national
            if style < 0.9:
                return pn.format_number(parsed, pn.PhoneNumberFormat.INTERNATIONAL)
            return pn.format_number(parsed, pn.PhoneNumberFormat.E164)

    def credit_card(self) -> str:
        _, prefixes, lengths = self.rng.choice(CARD_PLANS)
        return format_card(luhn_complete(self.rng.choice(prefixes), self.rng.choice(lengths), self.rng), self.rng)

    def iban(self) -> str:
        locale = self.rng.choice(["en_GB", "de_DE", "fr_FR", "nl_NL", "es_ES", "it_IT"])
        value = self.fakers[locale].iban()
        if self.rng.random() < 0.5:
            value = " ".join(value[i : i + 4] for i in range(0, len(value), 4))
        return value

    def ip_address(self) -> str:
        faker = self.fakers["en_US"]
        kind = self.rng.random()
        if kind < 0.6:
            return faker.ipv4()
        address = ipaddress.IPv6Address(faker.ipv6())
        return address.compressed if kind < 0.8 else address.exploded

    def ssn(self) -> str:
        value = self.fakers["en_US"].ssn()
        return value.replace("-", " ") if self.rng.random() < 0.15 else value

    def api_key(self) -> str:
        return make_api_key(self.rng)

    def value(self, pii_type: str) -> str:
        return getattr(self, pii_type)()

    # Look-alikes that must *not* be reported.
    def decoy(self) -> str:
        rng = self.rng
        kind = rng.randrange(9)
        if kind == 0:  # Luhn-invalid card
            number = luhn_complete("4", 16, rng)
            return number[:-1] + str((int(number[-1]) + 1) % 10)
        if kind == 1:  # SSNs in reserved ranges
            area = rng.choice(["000", "666", f"9{rng.randrange(10)}{rng.randrange(10)}"])
            return f"{area}-{rng.randrange(1, 100):02d}-{rng.randrange(1, 10000):04d}"
        if kind == 2:  # IBAN with a broken checksum
            value = self.fakers["de_DE"].iban()
            return value[:2] + f"{(int(value[2:4]) + 1) % 100:02d}" + value[4:]
        if kind == 3:
            return f"{rng.randrange(256, 999)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"
        if kind == 4:
            return str(rng.randrange(1_600_000_000, 1_800_000_000))  # Unix timestamp
        if kind == 5:
            return f"{rng.randrange(2000, 2030)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
        if kind == 6:
            return f"${rng.randrange(1, 99)},{rng.randrange(100, 999)}.{rng.randrange(10, 99)}"
        if kind == 7:
            return f"v{rng.randrange(1, 9)}.{rng.randrange(20)}.{rng.randrange(20)}"
        return f"{rng.randrange(10, 23)}:{rng.randrange(10, 59)}:{rng.randrange(10, 59)}"


LEADS = {
    "email": ["Email me at", "Contact:", "send it to", "my address is", ""],
    "phone": ["Call me on", "Phone:", "reach me at", "my number is", ""],
    "credit_card": ["Card number", "charge", "my card is", "CC:", ""],
    "iban": ["IBAN:", "transfer to", "account", "pay into", ""],
    "ip_address": ["server at", "IP", "from host", "connect to", ""],
    "ssn": ["SSN", "social security number", "my SSN is", "id", ""],
    "api_key": ["key:", "use the token", "export API_KEY=", "secret", ""],
}


def build_corpus(*, target_bytes: int, seed: int) -> list[Document]:
    """Chat-sized documents (~1 KB) of Faker prose with planted PII and look-alikes."""
    from faker import Faker

    rng = random.Random(seed)
    prose = Faker("en_US")
    prose.seed_instance(seed)
    factory = PiiFactory(seed)
    sentences = [prose.sentence(nb_words=rng.randrange(6, 20)) for _ in range(4000)]
    documents: list[Document] = []
    total = 0
    while total < target_bytes:
        parts: list[str] = []
        truth: list[tuple[str, int, int]] = []
        length = 0
        for _ in range(rng.randrange(4, 14)):
            roll = rng.random()
            if roll < 0.12:
                pii_type = rng.choice(TYPES)
                value = factory.value(pii_type)
                lead = rng.choice(LEADS[pii_type])
                prefix = f"{lead} " if lead else ""
                start = length + len(prefix)
                piece = f"{prefix}{value}{rng.choice(['.', ',', ' today.', ''])}"
                truth.append((pii_type, start, start + len(value)))
            elif roll < 0.20:
                piece = f"{rng.choice(['ref', 'on', 'about', 'at'])} {factory.decoy()} {rng.choice(sentences)}"
            else:
                piece = rng.choice(sentences)
            parts.append(piece)
            length += len(piece) + 1
        text = " ".join(parts)
        documents.append(Document(text, truth))
        total += len(text.encode())
    return documents


# --------------------------------------------------------------------------- scanners

Detector = Callable[[str], list[tuple[str, int, int]]]


def our_detector() -> Detector:
    def detect(text: str) -> list[tuple[str, int, int]]:
        return [(m.type, m.start, m.end) for m in pii.scan_text(text)]

    return detect


PRESIDIO_TYPES = {
    "EMAIL_ADDRESS": "email",
    "PHONE_NUMBER": "phone",
    "CREDIT_CARD": "credit_card",
    "IBAN_CODE": "iban",
    "IP_ADDRESS": "ip_address",
    "US_SSN": "ssn",
}


def keep_tldextract_offline() -> None:
    """Presidio's e-mail recogniser calls tldextract, which by default downloads the
    public-suffix list on first use; the bench must not touch the network, so it
    uses the snapshot bundled with the package instead."""
    import tldextract
    import tldextract.tldextract

    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def presidio_detector() -> Detector:
    import logging

    keep_tldextract_offline()
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NoOpNlpEngine

    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    engine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    analyzer = AnalyzerEngine(nlp_engine=engine, default_score_threshold=0.3)
    entities = list(PRESIDIO_TYPES)

    def detect(text: str) -> list[tuple[str, int, int]]:
        results = analyzer.analyze(text=text, language="en", entities=entities, score_threshold=0.3)
        return [(PRESIDIO_TYPES[r.entity_type], r.start, r.end) for r in results if r.entity_type in PRESIDIO_TYPES]

    return detect


SCRUBADUB_TYPES = {"email": "email", "phone": "phone", "credit_card": "credit_card", "social_security_number": "ssn"}


def scrubadub_detector(*, only_mapped: bool) -> Detector:
    keep_tldextract_offline()
    import scrubadub
    import scrubadub.detectors

    if only_mapped:
        detectors = [
            scrubadub.detectors.EmailDetector,
            scrubadub.detectors.PhoneDetector,
            scrubadub.detectors.CreditCardDetector,
            scrubadub.detectors.en_US.SocialSecurityNumberDetector,
        ]
        scrubber = scrubadub.Scrubber(detector_list=detectors, locale="en_US")
    else:
        scrubber = scrubadub.Scrubber(locale="en_US")

    def detect(text: str) -> list[tuple[str, int, int]]:
        found = []
        for filth in scrubber.iter_filth(text):
            for item in getattr(filth, "filths", None) or [filth]:
                if item.type in SCRUBADUB_TYPES:
                    found.append((SCRUBADUB_TYPES[item.type], item.beg, item.end))
        return found

    return detect


# --------------------------------------------------------------------------- scoring


@dataclass
class Score:
    seconds: float
    megabytes: float
    recall: dict[str, float | None]
    precision: dict[str, float | None]
    found: dict[str, int]

    @property
    def mb_per_s(self) -> float:
        return self.megabytes / self.seconds


def overlaps(a: tuple[str, int, int], b: tuple[str, int, int]) -> bool:
    return a[0] == b[0] and a[1] < b[2] and b[1] < a[2]


def score_outputs(documents: list[Document], outputs: list[list[tuple[str, int, int]]], seconds: float) -> Score:
    megabytes = sum(len(d.text.encode()) for d in documents) / 1e6
    hits = dict.fromkeys(TYPES, 0)
    truths = dict.fromkeys(TYPES, 0)
    true_found = dict.fromkeys(TYPES, 0)
    found = dict.fromkeys(TYPES, 0)
    for document, output in zip(documents, outputs):
        for truth in document.truth:
            truths[truth[0]] += 1
            if any(overlaps(truth, detection) for detection in output):
                hits[truth[0]] += 1
        for detection in output:
            found[detection[0]] += 1
            if any(overlaps(detection, truth) for truth in document.truth):
                true_found[detection[0]] += 1
    recall = {t: (hits[t] / truths[t] if truths[t] else None) for t in TYPES}
    precision = {t: (true_found[t] / found[t] if found[t] else None) for t in TYPES}
    return Score(seconds, megabytes, recall, precision, found)


def run_detectors(detectors: dict[str, Detector], documents: list[Document], *, rounds: int = 10) -> dict[str, Score]:
    """Every detector over the same documents, interleaved in ``rounds`` slices
    so a change in machine load hits all of them alike, timed in CPU seconds of
    this (single-core) process rather than wall time."""
    outputs: dict[str, list[list[tuple[str, int, int]]]] = {name: [] for name in detectors}
    seconds = dict.fromkeys(detectors, 0.0)
    for detect in detectors.values():
        detect(documents[0].text)  # lazy loading and first-call costs outside the clock
    size = max(1, len(documents) // rounds)
    for start in range(0, len(documents), size):
        chunk = documents[start : start + size]
        for name, detect in detectors.items():
            gc.collect()
            started = time.process_time()
            outputs[name].extend(detect(d.text) for d in chunk)
            seconds[name] += time.process_time() - started
    return {name: score_outputs(documents, outputs[name], seconds[name]) for name in detectors}


def pin_one_core() -> str:
    try:
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to CPU {core}"
    except (AttributeError, OSError) as error:  # not Linux
        return f"not pinned ({error})"


def fmt(value: float | None) -> str:
    return "   —  " if value is None else f"{value:6.3f}"


def command_scan(args: argparse.Namespace) -> int:
    print(pin_one_core())
    started = time.perf_counter()
    documents = build_corpus(target_bytes=int(args.mb * 1e6), seed=args.seed)
    planted = {t: sum(1 for d in documents for truth in d.truth if truth[0] == t) for t in TYPES}
    print(
        f"corpus: {len(documents)} documents, {sum(len(d.text.encode()) for d in documents) / 1e6:.2f} MB, "
        f"seed {args.seed}, built in {time.perf_counter() - started:.1f} s; planted {planted}"
    )
    scanners: list[tuple[str, Callable[[], Detector]]] = [("ours", our_detector)]
    if not args.skip_presidio:
        scanners.append(("presidio", presidio_detector))
    if not args.skip_scrubadub:
        scanners.append(("scrubadub", lambda: scrubadub_detector(only_mapped=True)))
        scanners.append(("scrubadub-all-detectors", lambda: scrubadub_detector(only_mapped=False)))
    detectors: dict[str, Detector] = {}
    for name, build in scanners:
        try:
            detectors[name] = build()
        except Exception as error:  # ImportError, or a baseline that cannot start here
            print(f"{name}: NOT MEASURED — could not be set up: {type(error).__name__}: {error}")
    scores = run_detectors(detectors, documents)
    print()
    print("MB/s = megabytes of UTF-8 text per CPU second of one core (scanners interleaved in 10 rounds)")
    print(f"{'scanner':<24} {'MB/s':>8}   " + " ".join(f"{t[:11]:>11}" for t in TYPES))
    for name, score in scores.items():
        print(f"{name:<24} {score.mb_per_s:8.2f}   recall    " + " ".join(f"{fmt(score.recall[t]):>11}" for t in TYPES))
        print(f"{'':<24} {'':>8}   precision " + " ".join(f"{fmt(score.precision[t]):>11}" for t in TYPES))
    print()
    ours = scores["ours"]
    for name, score in scores.items():
        if name == "ours":
            continue
        ratio = ours.mb_per_s / score.mb_per_s
        weaker = [
            t for t in TYPES
            if (theirs := score.recall[t]) is not None and score.found[t] and (ours.recall[t] or 0.0) < theirs
        ]
        verdict = "recall ≥ theirs on every type they detect" if not weaker else f"recall BELOW theirs on {weaker}"
        print(f"ours/{name}: {ratio:.1f}× faster; {verdict}")
    return 0


# --------------------------------------------------------------------------- benign hard negatives


FILE_SIZES = (10, 100, 1000)


def command_negatives(args: argparse.Namespace) -> int:
    """False positives on benign numbers (bench/pii/negatives.py), per class and per type, and the
    share of files a single finding would block."""
    corpus = build_negatives(per_class=args.per_class, seed=args.seed)
    total_lines = sum(len(lines) for lines in corpus.values())
    print(f"benign hard negatives: {len(corpus)} classes × {args.per_class} lines, seed {args.seed}; "
          "every finding is a false positive")
    print(f"{'class':<30} {'lines flagged':>14}   files of N such lines blocked: "
          + " ".join(f"{'N=' + str(size):>8}" for size in FILE_SIZES) + "   findings by type")
    flagged_by_type = dict.fromkeys(TYPES, 0)
    flagged_lines = 0
    examples: list[str] = []
    for name, lines in corpus.items():
        flagged = 0
        shown = 0
        by_type = dict.fromkeys(TYPES, 0)
        for line in lines:
            matches = pii.scan_text(line)
            if matches:
                flagged += 1
                if shown < args.examples:
                    shown += 1
                    examples.append(f"{name}: {line!r} -> " + ", ".join(f"{m.type} {line[m.start:m.end]!r}" for m in matches))
            for kind in {m.type for m in matches}:
                flagged_by_type[kind] += 1
            for match in matches:
                by_type[match.type] += 1
        flagged_lines += flagged
        found = ", ".join(f"{kind} {count}" for kind, count in by_type.items() if count) or "—"
        line_rate = flagged / len(lines)
        files = " ".join(f"{1 - (1 - line_rate) ** size:>8.1%}" for size in FILE_SIZES)
        print(f"{name:<30} {line_rate:>13.1%}   {files}   {found}")
    rate = flagged_lines / total_lines
    files = " ".join(f"{1 - (1 - rate) ** size:>8.1%}" for size in FILE_SIZES)
    print(f"{'all classes':<30} {rate:>13.1%}   {files}")
    print()
    print("lines flagged per type (of all benign lines): " + ", ".join(
        f"{kind} {count / total_lines:.2%}" for kind, count in flagged_by_type.items()))
    print("files blocked: a single finding blocks fine-tuning; a file of N lines that each carry one such number is "
          "blocked with probability 1 - (1 - p)^N, p = the share of lines flagged (lines drawn independently)")
    if examples:
        print()
        print("examples:")
        for example in examples:
            print(f"  {example}")
    return 0


def command_context(args: argparse.Namespace) -> int:
    """Recall on real PII in support-chat contexts (bench/pii/context_positives.py), per type."""
    corpus = build_context_positives(seed=args.seed, per_type=args.per_type)
    planted = dict.fromkeys(TYPES, 0)
    found = dict.fromkeys(TYPES, 0)
    missed: list[str] = []
    for line, kind, value in corpus:
        start = line.index(value)
        end = start + len(value)
        planted[kind] += 1
        if any(m.type == kind and m.start < end and m.end > start for m in pii.scan_text(line)):
            found[kind] += 1
        else:
            missed.append(f"  {kind}: {line!r}")
    total = sum(planted.values())
    print(f"real PII in support-chat contexts: {total} lines, seed {args.seed}")
    for kind in TYPES:
        if planted[kind]:
            print(f"{kind:<12} recall {found[kind]}/{planted[kind]} = {found[kind] / planted[kind]:.3f}")
    print(f"{'all':<12} recall {sum(found.values())}/{total} = {sum(found.values()) / total:.3f}")
    if missed:
        print("missed:")
        print("\n".join(missed))
    return 0


def command_evasions(args: argparse.Namespace) -> int:
    """Recall on PII written to evade an ASCII scanner, and false positives on benign text written with
    the same characters (bench/pii/evasions.py). Values are printed masked: the probe values are made up,
    but the habit is kept."""
    positives = build_evasion_positives()
    found_by_evasion: dict[str, list[int]] = {}
    missed: list[str] = []
    for evasion, kind, line, value in positives:
        # Found: a finding of its type covering the whole value (a partial span would leave digits in a
        # scrub); a keycap's marks after the last digit may stay outside it.
        start = line.index(value)
        end = start + len(value.rstrip("\ufe0f\u20e3"))
        matches = pii.scan_text(line)
        hit = any(m.type == kind and m.start <= start and m.end >= end for m in matches)
        tally = found_by_evasion.setdefault(evasion, [0, 0])
        tally[0] += hit
        tally[1] += 1
        if not hit:
            got = ", ".join(f"{m.type} {pii.mask(m.value_in(line), m.type)!r}" for m in matches) or "nothing"
            missed.append(f"  {evasion}: {kind} {pii.mask(value, kind)!r} -> {got}")
    total_found = sum(found for found, _ in found_by_evasion.values())
    print(f"PII written to evade an ASCII scanner: {len(positives)} lines, {len(found_by_evasion)} evasions")
    for evasion, (found, planted) in found_by_evasion.items():
        print(f"  {evasion:<34} {found:>3}/{planted:<3}")
    print(f"recall {total_found}/{len(positives)} = {total_found / len(positives):.3f}")
    flagged = []
    for name, line in EVASION_NEGATIVES:
        matches = pii.scan_text(line)
        if matches:
            flagged.append(f"  {name}: {line!r} -> " + ", ".join(f"{m.type} {m.value_in(line)!r}" for m in matches))
    print(f"benign lines with the same characters: {len(flagged)}/{len(EVASION_NEGATIVES)} flagged "
          f"= {len(flagged) / len(EVASION_NEGATIVES):.3f}")
    left_out = [(how, any(m.type == kind for m in pii.scan_text(line))) for how, kind, line in EVASIONS_LEFT_OUT]
    print(f"left out on purpose (not in the recall): {sum(hit for _, hit in left_out)}/{len(left_out)} found — "
          + ", ".join(f"{how} {'found' if hit else 'missed'}" for how, hit in left_out))
    if missed:
        print("missed:")
        print("\n".join(missed))
    if flagged:
        print("false positives:")
        print("\n".join(flagged))
    return 0


# --------------------------------------------------------------------------- full audit


def write_audit_corpus(*, path: Path, target_bytes: int, seed: int) -> dict[str, int]:
    """A chat JSONL with every finding the audit reports, built fast from pools."""
    from faker import Faker

    rng = random.Random(seed)
    prose = Faker("en_US")
    prose.seed_instance(seed)
    factory = PiiFactory(seed)
    sentences = [prose.sentence(nb_words=rng.randrange(6, 22)) for _ in range(6000)]
    pii_values = [(t, factory.value(t)) for t in TYPES for _ in range(300)]
    reasoning = ["Let's think step by step.", "because the constraint holds, therefore", "Explain why and prove it."]
    constraints = ["Answer in at most 3 sentences.", "You must return JSON.", "Use exactly 5 bullet points."]
    code = "```python\ndef f(x):\n    return sorted(x)[:3]\n```"
    stats = {"lines": 0, "exact_planted": 0, "near_planted": 0, "bad_planted": 0}
    recent: list[str] = []
    written = 0
    with path.open("w", encoding="utf-8") as handle:
        while written < target_bytes:
            roll = rng.random()
            if recent and roll < 0.04:
                line = rng.choice(recent)
                stats["exact_planted"] += 1
            elif recent and roll < 0.07:
                record = json.loads(rng.choice(recent))
                record["messages"][-1]["content"] += " Thanks!"
                line = json.dumps(record, ensure_ascii=False)
                stats["near_planted"] += 1
            elif roll < 0.075:
                line = rng.choice(['{"messages": [{"role": "bot", "content": "hi"}]}', '["not", "an", "object"]', '{"messages": [', ""])
                stats["bad_planted"] += 1
            else:
                turns = rng.choice([1, 1, 1, 2, 3])
                messages = []
                if rng.random() < 0.3:
                    messages.append({"role": "system", "content": rng.choice(sentences)})
                hardness = rng.random()
                for _ in range(turns):
                    user = " ".join(rng.choice(sentences) for _ in range(rng.randrange(1, 6)))
                    if hardness > 0.6:
                        user += " " + rng.choice(constraints) + " " + rng.choice(reasoning)
                    if rng.random() < 0.08:
                        pii_type, value = rng.choice(pii_values)
                        user += f" {rng.choice(LEADS[pii_type])} {value}."
                    answer = " ".join(rng.choice(sentences) for _ in range(rng.randrange(2, 14 if hardness > 0.5 else 6)))
                    if hardness > 0.85:
                        answer += "\n" + code
                    messages.append({"role": "user", "content": user})
                    messages.append({"role": "assistant", "content": answer})
                line = json.dumps({"messages": messages}, ensure_ascii=False)
                if len(recent) < 2000:
                    recent.append(line)
                elif rng.random() < 0.05:
                    recent[rng.randrange(len(recent))] = line
            handle.write(line + "\n")
            written += len(line.encode()) + 1
            stats["lines"] += 1
    return stats


def write_short_lines_corpus(*, path: Path, lines: int, seed: int) -> dict[str, int]:
    """`lines` short chat lines (~85 bytes each, mostly distinct, 2 % exact repeats): the shape whose
    per-line bookkeeping, not its bytes, used to set the audit's memory."""
    rng = random.Random(seed)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
    stats = {"lines": 0, "exact_planted": 0}
    previous = ""
    with path.open("w", encoding="utf-8") as handle:
        for index in range(lines):
            if previous and rng.random() < 0.02:
                line = previous
                stats["exact_planted"] += 1
            else:
                line = json.dumps({"messages": [
                    {"role": "user", "content": f"q{index} {rng.choice(words)} {rng.randrange(10**6)}?"},
                    {"role": "assistant", "content": f"a {rng.choice(words)} {rng.randrange(10**6)}"},
                ]})
                previous = line
            handle.write(line + "\n")
            stats["lines"] += 1
    return stats


class TreeMemorySampler:
    """Peak PSS of this process and its descendants (the audit's workers), sampled every 0.1 s from
    /proc (Linux). PSS shares the pages forked workers inherit instead of counting them once per
    process, as summed RSS does, so it is what the audit really holds."""

    def __init__(self) -> None:
        import threading

        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _descendants(pid: int) -> list[int]:
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as handle:
                kids = [int(item) for item in handle.read().split()]
        except OSError:
            return []
        return [grand for kid in kids for grand in [kid, *TreeMemorySampler._descendants(kid)]]

    @staticmethod
    def _pss_mb(pid: int) -> float:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as handle:
                for line in handle:
                    if line.startswith("Pss:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            pids = [os.getpid(), *self._descendants(os.getpid())]
            self.peak_mb = max(self.peak_mb, sum(self._pss_mb(pid) for pid in pids))

    def __enter__(self) -> TreeMemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def command_audit(args: argparse.Namespace) -> int:
    from audits.report import audit_file

    if args.keep and Path(args.keep).exists():
        path = Path(args.keep)
        print(f"reusing {path} ({path.stat().st_size / 1e6:.1f} MB)")
    else:
        path = Path(args.keep) if args.keep else Path(tempfile.mkdtemp()) / "audit-bench.jsonl"
        started = time.perf_counter()
        if args.shape == "short":
            stats = write_short_lines_corpus(path=path, lines=args.lines, seed=args.seed)
        else:
            stats = write_audit_corpus(path=path, target_bytes=int(args.mb * 1e6), seed=args.seed)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - started:.1f} s: {stats}")
    before = resource.getrusage(resource.RUSAGE_SELF)
    rss_before = before.ru_maxrss
    cpu_before = before.ru_utime + before.ru_stime
    started = time.perf_counter()
    with TreeMemorySampler() as sampler:
        report = audit_file(path, workers=args.workers)
    seconds = time.perf_counter() - started
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    parent_peak = own.ru_maxrss / 1024
    child_peak = children.ru_maxrss / 1024
    cpu_seconds = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime - cpu_before
    summary = report.to_contract_dict()
    print(json.dumps({k: summary[k] for k in ("lines", "valid", "pii", "duplicates", "difficulty")}, indent=None))
    print(f"format errors: {len(summary['format_errors'])} listed")
    size_mb = path.stat().st_size / 1e6
    print(
        f"audit of {size_mb:.1f} MB with workers={args.workers}: {seconds:.2f} s wall ({size_mb / seconds:.1f} MB/s); "
        f"peak RSS parent {parent_peak:.0f} MB (before the audit {rss_before / 1024:.0f} MB), "
        f"largest worker {child_peak:.0f} MB, parent + workers ≤ {parent_peak + args.workers * child_peak:.0f} MB; "
        f"{cpu_seconds:.1f} CPU seconds in all (a wall time far above CPU seconds / workers means other load); "
        f"peak PSS of parent + workers together {sampler.peak_mb:.0f} MB"
    )
    if not args.keep:
        path.unlink()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    scan = commands.add_parser("scan", help="our scanner vs Presidio vs scrubadub on one core")
    scan.add_argument("--mb", type=float, default=3.0)
    scan.add_argument("--seed", type=int, default=7)
    scan.add_argument("--skip-presidio", action="store_true")
    scan.add_argument("--skip-scrubadub", action="store_true")
    negatives = commands.add_parser("negatives", help="false positives on benign numbers (versions, ids, …)")
    negatives.add_argument("--per-class", type=int, default=1000)
    negatives.add_argument("--seed", type=int, default=7)
    negatives.add_argument("--examples", type=int, default=0, help="print this many flagged lines per class")
    context = commands.add_parser("context", help="recall on real PII in support-chat contexts")
    context.add_argument("--per-type", type=int, default=20)
    context.add_argument("--seed", type=int, default=7)
    commands.add_parser("evasions", help="recall on PII written to evade an ASCII scanner; false positives beside it")
    audit = commands.add_parser("audit", help="time a full audit of a generated JSONL")
    audit.add_argument("--mb", type=float, default=100.0)
    audit.add_argument("--workers", type=int, default=2)
    audit.add_argument("--seed", type=int, default=7)
    audit.add_argument("--keep", help="write (or reuse) the JSONL at this path instead of a temp file")
    audit.add_argument("--shape", choices=["ordinary", "short"], default="ordinary",
                       help="ordinary: --mb of chat lines of every kind; short: --lines short lines (~85 bytes)")
    audit.add_argument("--lines", type=int, default=1_000_000, help="line count of --shape short")
    args = parser.parse_args()
    commands_by_name = {"scan": command_scan, "negatives": command_negatives, "context": command_context,
                        "evasions": command_evasions, "audit": command_audit}
    return commands_by_name[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
