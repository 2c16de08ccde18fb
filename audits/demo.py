"""The audits part of the demo world `seed_demo` builds: one support-ticket dataset for support_agent,
already audited, with something to find in every section of its page — PII of several types, a format
error, an exact and a near duplicate, examples of all three difficulty levels — so a person can press
"Scrub" and "Rebalance" on it right away. Idempotent.

Every PII value here is synthetic: reserved example domains, Ofcom's drama phone range, a documented
test card number and IBAN, AWS's documentation key."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from django.core.management.base import OutputWrapper

from audits.models import Dataset
from audits.report import audit_file
from audits.services import DATASET_DIR, dataset_record_audit
from models_app.registry.models import Agent

DEMO_AGENT = "support_agent"
DEMO_NAME = "support_tickets_demo.jsonl"
DEMO_STORAGE_NAME = f"{DATASET_DIR}/demo/{DEMO_NAME}"
DEMO_VIA = "seed_demo"
SYSTEM = "You are a friendly billing support agent. Resolve the customer's question."
PLAN_ANSWER = (
    "Yes: open Settings > Plan, pick the new plan and confirm. The difference is prorated to the day and shows "
    "on your next invoice, and you can switch back at any time without a fee."
)


def _chat(user: str, assistant: str) -> str:
    return json.dumps({"messages": [
        {"role": "system", "content": SYSTEM}, {"role": "user", "content": user}, {"role": "assistant", "content": assistant},
    ]})


DEMO_LINES = [
    _chat("How do I download last month's invoice?", "Open Billing > Invoices, pick the month and click Download PDF."),
    _chat("Why was I charged twice this month?", "One of the two charges is a pending authorisation; it disappears within three days."),
    _chat("Please send the receipt to maria.lopez@example.com instead.", "Done: receipts now go to the address you gave."),
    _chat("My card 4111 1111 1111 1111 was declined, what now?", "Check the expiry date and billing address, then try again or add another card."),
    _chat("Call me back on +44 20 7946 0958 after five.", "A colleague will call you after 17:00 your time."),
    _chat("Refund to my account GB82 WEST 1234 5698 7654 32 please.", "Refunds go back to the original payment method; bank transfers are not possible."),
    _chat("Our integration uses the key AKIAIOSFODNN7EXAMPLE, is that why it fails?",
          "Never share keys in a ticket: rotate that key now, then check the request signature."),
    _chat("Can I change my plan?", PLAN_ANSWER),
    _chat("Can I change my plan?", PLAN_ANSWER),
    _chat("Please, can I change my plan?", PLAN_ANSWER),  # a near duplicate (the system prompt does not count)
    _chat(
        "Explain why my invoice total differs from the plan price, step by step, and compare it with last month.",
        "First, the plan price excludes tax; because your address changed, therefore a different VAT rate applies. "
        "Second, the seats you added mid-month are prorated, which means a partial charge appears. Finally, compare "
        "the two invoices line by line: the difference is the tax and the prorated seats.",
    ),
    _chat(
        "Write a function that must compute the prorated charge for a seat added mid-month. It must return exactly "
        "two decimals, never round down, and the answer must be in JSON format with at most 3 fields.",
        "First, because billing periods differ in length, the charge is price × remaining_days / days_in_period; "
        "therefore we compute it per period and round up.\n```python\ndef prorated(price, remaining, days):\n"
        "    from decimal import Decimal, ROUND_UP\n    value = Decimal(price) * remaining / days\n"
        "    return {\"charge\": str(value.quantize(Decimal('0.01'), rounding=ROUND_UP))}\n```\n"
        "We compare the trade-off: rounding up by at most one cent per seat is fair to the customer and simple to "
        "prove correct, which means the total never undercharges; in other words, it follows the contract.",
    ),
    '{"messages": [{"role": "customer", "content": "Where is my refund?"}, {"role": "assistant", "content": "On its way."}]}',
]


def seed_audits(*, out: OutputWrapper) -> None:
    if Dataset.objects.filter(via=DEMO_VIA).exists():
        out.write("audits: demo dataset already there")
        return
    agent = Agent.objects.filter(slug=DEMO_AGENT).first()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / DEMO_NAME
        path.write_text("\n".join(DEMO_LINES) + "\n", encoding="utf-8")
        report = audit_file(path)
        run = dataset_record_audit(
            path=path, report=report, agent=agent, via=DEMO_VIA, original_name=DEMO_NAME, storage_name=DEMO_STORAGE_NAME,
        )
    out.write(
        f"audits: demo dataset #{run.dataset_id} ({DEMO_NAME}) audited: {run.pii_total} PII, "
        f"{run.format_error_total} format error, {run.duplicates_exact} + {run.duplicates_near} duplicates"
    )
