"""Real PII in the contexts support chats write it in: the recall corpus for context rules.

Every line carries one real value (a valid phone, a Luhn-valid card in an issuer range, an IPv4 or IPv6
address, an e-mail, an IBAN with a good checksum, an SSN in a valid range) next to the words that a
"benign context" rule might read as harmless: an id word before it ("customer number", "ref", "txn",
"Refund request"), a section or step word ("rule:", "Step:", "sec"), a unit or count word after it
("lines are open"), letters glued to it ("x204", "Email:", "exp0427"), digits grouped in threes.

The audit gates fine-tuning, and a missed value is far worse than a false positive (which a person's
override reason can pass), so the scanner must find every line here: tests/audits/test_pii_context.py
requires recall 1.0, and ``bench/pii/run.py context`` prints it. A rule that drops findings by their
context has to keep this corpus whole.

One limit is left out, as it was before any context rule: letters glued after a value that may itself
end in letters — an IBAN ("GB82WEST12345698765432Thanks"), an e-mail ("anna@example.comx204": the letters
are read as part of the domain), an IPv6 address (hex and colons, so "Contact:" before it too) — are part
of the token, and the scanner finds no valid value there. Those lines get a space after the value (and
before an IPv6 address); numbers (phones, cards, IPv4) keep the glue.
"""

from __future__ import annotations

import random

# Values checked one by one to be found by the scanner in a neutral sentence ("write to me: {v}").
VALUES: dict[str, list[str]] = {
    "phone": [
        "4155552671", "2125550123", "8005551234", "(415) 555-2671", "415-555-2671", "07911123456",
        "030 123 456 789", "+44 20 7946 0958", "020 7946 0958", "+49 30 12345678", "06 12 34 56 78",
    ],
    "credit_card": [
        "4532015112830366", "4111111111111111", "5500005555555559", "4012888888881881", "5105105105105100",
        "378282246310005", "6011111111111117", "4111 1111 1111 1111", "5555-5555-5555-4444",
    ],
    "ip_address": [
        "198.51.100.23", "203.0.113.45", "10.20.30.41", "203.0.113.77", "185.220.101.4", "192.168.1.20",
        "2001:db8::8a2e:370:7334",
    ],
    "email": ["anna@example.com", "j.smith+billing@example.org", "support.team@mail.example.co.uk"],
    "iban": ["GB82WEST12345698765432", "DE89370400440532013000", "GB82 WEST 1234 5698 7654 32"],
    "ssn": ["536-22-1234", "078-05-1121", "219 09 9998"],
}

# The reviewer's lines (2026-12-07): each was lost by the context rules of c8a4fce.
REVIEW_LINES: list[tuple[str, str, str]] = [
    ("My customer number is 4155552671, please call me back on it", "phone", "4155552671"),
    ("Customer: 4155552671 called about the outage", "phone", "4155552671"),
    ("Callback request 4155552671", "phone", "4155552671"),
    ("reference: 07911123456 (that's my mobile)", "phone", "07911123456"),
    ("You can reach me at 4155552671x204", "phone", "4155552671"),
    ("Phone:4155552671Email:anna@example.com", "phone", "4155552671"),
    ("Call 8005551234 lines are open 24/7", "phone", "8005551234"),
    ("German office 030 123 456 789", "phone", "030 123 456 789"),
    ("Please process the transaction: 4532015112830366 exp 04/27", "credit_card", "4532015112830366"),
    ("Refund request 4532015112830366", "credit_card", "4532015112830366"),
    ("customer id 4111111111111111 is the card on file", "credit_card", "4111111111111111"),
    ("Payment ref 5500005555555559 declined", "credit_card", "5500005555555559"),
    ("txn 4012888888881881 failed", "credit_card", "4012888888881881"),
    ("card 4532015112830366exp0427cvv123", "credit_card", "4532015112830366"),
    ("Firewall rule: 198.51.100.23 is blocked", "ip_address", "198.51.100.23"),
    ("allow rule 203.0.113.45", "ip_address", "203.0.113.45"),
    ("Please release 10.20.30.41 from the DHCP pool", "ip_address", "10.20.30.41"),
    ("Step: 203.0.113.77 is the jump host", "ip_address", "203.0.113.77"),
    ("at sec 185.220.101.4", "ip_address", "185.220.101.4"),
]

# Support-chat contexts; {v} is the value. Shared by every type.
TEMPLATES: list[str] = [
    "My customer number is {v}, please call me back on it",
    "Customer: {v} called twice today",
    "Callback request {v}",
    "reference: {v} (that's mine)",
    "Ticket #{v}",
    "order {v} — that's the one I used",
    "case {v} please escalate",
    "Refund request {v}",
    "Payment ref {v} declined",
    "txn {v} failed",
    "transaction: {v} was charged twice",
    "invoice no. {v} is the account",
    "request id {v}",
    "Firewall rule: {v} is blocked",
    "allow rule {v}",
    "Step: {v} is the one to use",
    "at sec {v}",
    "see section {v} for the details",
    "release {v} from the list",
    "build {v} is where it lives",
    "item {v} on file",
    "{v} lines are open 24/7",
    "{v} bytes of attachments were sent from it",
    "the number {v} rows up in our CRM",
    "Contact:{v}Thanks",
    "{v}x204",
    "serial {v} belongs to me",
    "Customer id: {v}",
]
GLUED_AFTER = frozenset({"Contact:{v}Thanks", "{v}x204"})


def build_context_positives(*, seed: int = 7, per_type: int = 20) -> list[tuple[str, str, str]]:
    """(line, type, value) triples: the review's lines, then ``per_type`` seeded lines per type, each a
    template above filled with one of the type's values (templates drawn without repeats while they last)."""
    rng = random.Random(seed)
    lines = list(REVIEW_LINES)
    for kind, values in VALUES.items():
        templates: list[str] = []
        for _ in range(per_type):
            if not templates:
                templates = rng.sample(TEMPLATES, len(TEMPLATES))
            value = rng.choice(values)
            template = templates.pop()
            if template in GLUED_AFTER and ":" in value:
                template = template.replace("{v}", " {v} ")  # an IPv6 address glued to words: see above
            elif template in GLUED_AFTER and kind in ("email", "iban"):
                template = template.replace("{v}", "{v} ")  # letters glued after a word-like value: see above
            lines.append((template.format(v=value), kind, value))
    return lines
