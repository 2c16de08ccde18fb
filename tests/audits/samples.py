"""PII values of every type in the forms people type them, and look-alikes that are not PII.

Shared by the audits tests.  Every value here is synthetic (documented test
numbers, reserved example domains, generated keys).
"""

from __future__ import annotations

import json
from pathlib import Path

from audits.pii import luhn_valid


def luhn_complete(body: str) -> str:
    """``body`` plus the check digit that makes it pass Luhn."""
    for check in "0123456789":
        if luhn_valid(body + check):
            return body + check
    raise AssertionError("unreachable")


def grouped(number: str, sizes: tuple[int, ...], separator: str) -> str:
    parts, position = [], 0
    for size in sizes:
        parts.append(number[position : position + size])
        position += size
    return separator.join(parts)


VISA_19 = luhn_complete("400000000000000000")
MAESTRO_12 = luhn_complete("50180000000")

PLANTED: dict[str, list[str]] = {
    "email": [
        "john.doe@example.com",
        "Jane_O'Neil+news@mail.example.co.uk",
        "ADMIN@EXAMPLE.ORG",
        "first.last@sub-domain.example.io",
    ],
    "phone": [
        "(415) 555-2671",
        "415-555-2671",
        "415.555.2671",
        "+1 415 555 2671",
        "1-415-555-2671",
        "020 7946 0958",
        "+44 20 7946 0958",
        "+44 (0)20 7946 0958",
        "+49 30 901820",
        "+33 1 42 68 53 00",
        "+91 98765 43210",
    ],
    "credit_card": [
        "4111 1111 1111 1111",  # Visa 16
        "4111-1111-1111-1111",
        "4222222222222",  # Visa 13
        grouped(VISA_19, (4, 4, 4, 4, 3), " "),  # Visa 19
        "5555 5555 5555 4444",  # Mastercard 51-55
        "2223003122003222",  # Mastercard 2221-2720
        "3782 822463 10005",  # Amex
        "6011 1111 1111 1117",  # Discover
        "3530 1113 3330 0000",  # JCB
        "3056 9309 0259 04",  # Diners
        "6759 6498 2643 8453",  # Maestro
        MAESTRO_12,  # Maestro, 12 digits
        "6200 0000 0000 0005",  # UnionPay
    ],
    "iban": [
        "GB82 WEST 1234 5698 7654 32",
        "DE89370400440532013000",
        "FR14 2004 1010 0505 0001 3M02 606",
        "NL91ABNA0417164300",
    ],
    "ip_address": [
        "192.168.1.1",
        "8.8.8.8",
        "2001:db8:85a3::8a2e:370:7334",
        "::1",
        "fe80::1ff:fe23:4567:890a",
        "::ffff:192.0.2.128",
    ],
    "ssn": ["123-45-6789", "078 05 1120", "536.22.8726"],
    "api_key": [
        "sk-proj-" + "Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6kL9nP2rS5uV8",
        "sk-" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8s9T0u1V2w3X4",
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
        "github_pat_11ABCDEFG0123456789abc_" + "x" * 59,
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        "AIza" + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
        "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
        "rk_live_" + "51H8xYZabc123DEF456ghi789",
        "pk_live_" + "TYooMQauvdEDq54NiTphI7jx",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA+4412345678901abcDEF\nZmFrZWtleQ==\n-----END RSA PRIVATE KEY-----",
    ],
}

LOOK_ALIKES = [
    "4111 1111 1111 1112",  # fails Luhn
    "4111111111111112",
    "000-12-3456",  # SSN area 000
    "666-12-3456",  # SSN area 666
    "912-34-5678",  # SSN area 9xx
    "123-00-4567",  # SSN group 00
    "123-45-0000",  # SSN serial 0000
    "GB82 WEST 1234 5698 7654 33",  # IBAN checksum off by one
    "DE00370400440532013000",
    "256.1.1.1",
    "1.2.3",
    "std::vector",
    "12:30:45",
    "sk-learn-is-a-python-library-for-machine-learning",
    "1700000000",  # a Unix timestamp
    "2024-05-12",
    "3.14159265358979",
    "0.914398414616",  # a decimal, not a national phone number
    "v1.2.3.4",
    "Order 12345678",
    "$1,299.99",
]


def sentence_with(value: str) -> str:
    return f"Please note {value} for later."


def chat_line(user: str, assistant: str = "Noted, thank you.", **extra: object) -> str:
    record = {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}], **extra}
    return json.dumps(record, ensure_ascii=False)


def write_lines(path: Path, lines: list[str], *, final_newline: bool = True) -> Path:
    text = "\n".join(lines) + ("\n" if final_newline and lines else "")
    path.write_text(text, encoding="utf-8")
    return path
