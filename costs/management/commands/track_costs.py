"""`track_costs --report [--format md|csv|json] [--out FILE]` prints (or writes) the ledger report;
`track_costs --log --agent A --operation OP --cost USD [--tokens N] [--model M] [--note T]` records an
entry. Exit 0 done, 1 refused by the service, 2 usage error (unknown agent, bad number, …)."""

from __future__ import annotations

import uuid
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from costs import budgeting, reports, selectors
from costs.models import Operation
from costs.services import cost_record
from genesis.commands import command_agent, command_user, usage_error
from genesis.errors import DomainError, InvalidInput
from genesis.validation import MONEY_DECIMALS, MONEY_INTEGER_DIGITS, parse_money

LOG_ONLY = ("agent", "operation", "cost", "tokens", "model", "note", "key")
# The service names its parameters; a person running the command knows them by their options.
OPTION_OF_PARAMETER = {"amount_usd": "--cost", "tokens": "--tokens", "model": "--model", "idempotency_key": "--key"}


def in_option_terms(message: str) -> str:
    """'amount_usd: 99999999999 is too large; …' → '--cost: 99999999999 is too large; …'."""
    parameter, separator, rest = message.partition(": ")
    option = OPTION_OF_PARAMETER.get(parameter)
    return f"{option}: {rest}" if separator and option else message


def parse_cost(text: str) -> Decimal:
    """`--cost` as the API reads a dollar amount (genesis.validation.parse_money: MONEY_PATTERN, digits
    with at most one point, at most 10 digits before it and 6 after), or a usage error saying what is
    wrong with it. Decimal() alone also took "1_0" ($10), "-0", " 2" and "1e1"."""
    try:
        return parse_money(text)
    except ValueError:
        pass
    try:
        amount = Decimal(text)
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite():
        raise usage_error(f"--cost: '{text}' is not a number of dollars, e.g. 2.50")
    if amount.is_signed():
        raise usage_error(f"--cost: '{text}' must be zero or more, written without a sign (correct an entry by reversing it in the admin)")
    exponent = amount.as_tuple().exponent  # an int for a finite number
    if isinstance(exponent, int) and exponent < -MONEY_DECIMALS:
        # As the admin's form: a typed amount is never rounded behind the person's back.
        raise usage_error(f"--cost: '{text}' has more than {MONEY_DECIMALS} decimal places (the ledger keeps micro-dollars)")
    if amount.adjusted() >= MONEY_INTEGER_DIGITS:
        largest = Decimal(10) ** MONEY_INTEGER_DIGITS - Decimal(1).scaleb(-MONEY_DECIMALS)
        raise usage_error(
            f"--cost: {text} is too large; it can be at most {largest:,f} ({MONEY_INTEGER_DIGITS} digits before the decimal point)"
        )
    raise usage_error(
        f"--cost: '{text}' is not written as dollars: up to {MONEY_INTEGER_DIGITS} digits, then optionally a point and up to "
        f"{MONEY_DECIMALS} more, e.g. 2.50 (no sign, exponent, underscore or space)"
    )


class Command(BaseCommand):
    help = "The cost ledger: print a report (--report) or record an entry by hand (--log)."

    def add_arguments(self, parser: CommandParser) -> None:
        mode = parser.add_mutually_exclusive_group(required=True)
        mode.add_argument("--report", action="store_true", help="print the ledger report")
        mode.add_argument("--log", action="store_true", help="record one cost entry")
        parser.add_argument("--format", choices=reports.FORMATS, help="report format (default md)")
        parser.add_argument("--out", metavar="FILE", help="write the report to FILE instead of stdout")
        parser.add_argument("--agent", metavar="A", help="agent slug, e.g. qa_agent")
        parser.add_argument("--operation", metavar="OP", help=f"one of {', '.join(Operation.values)}")
        parser.add_argument("--cost", metavar="USD", help="amount in dollars, e.g. 2.50")
        parser.add_argument("--tokens", metavar="N", help="tokens the cost paid for")
        parser.add_argument("--model", metavar="M", default="", help="model id")
        parser.add_argument("--note", metavar="T", default="", help="why")
        parser.add_argument("--key", metavar="K", help="idempotency key (default: a new one); the same key records once")
        parser.add_argument("--as", dest="username", metavar="USERNAME", help="record as this user (default: the system)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["report"]:
            given = [f"--{name}" for name in LOG_ONLY if options.get(name) not in (None, "")]
            if given:
                raise usage_error(f"{', '.join(given)}: only with --log")
            self.report(fmt=options["format"] or "md", out=options["out"])
        else:
            if options["format"] or options["out"]:
                raise usage_error("--format and --out go with --report, not --log")
            self.log(options)

    def report(self, *, fmt: str, out: str | None) -> None:
        data = selectors.cost_report_data()
        text = reports.render(data, fmt=fmt)
        if out is None:
            self.stdout.write(text, ending="")
            return
        try:
            Path(out).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise usage_error(f"--out {out}: cannot write ({exc.strerror})") from None
        self.stdout.write(
            f"wrote the {fmt} report to {out}: {budgeting.format_usd(data.total)} over {data.entry_count} entries"
        )

    def log(self, options: dict[str, Any]) -> None:
        missing = [f"--{name}" for name in ("agent", "operation", "cost") if not options.get(name)]
        if missing:
            raise usage_error(f"--log needs {', '.join(missing)}")
        agent = command_agent(options["agent"])
        if options["operation"] not in Operation.values:
            raise usage_error(f"--operation: '{options['operation']}' is not one of {', '.join(Operation.values)}")
        cost = parse_cost(options["cost"])
        tokens = None
        if options["tokens"] is not None:
            try:
                tokens = int(options["tokens"])
            except ValueError:
                raise usage_error(f"--tokens: '{options['tokens']}' is not a whole number") from None
            if tokens < 0:
                raise usage_error("--tokens: cannot be negative")
        actor = command_user(options["username"])
        try:
            entry = cost_record(
                agent=agent, operation=options["operation"], amount_usd=cost, tokens=tokens, model=options["model"],
                note=options["note"], actor=actor, source="track_costs --log",
                idempotency_key=options["key"] or f"manual:{uuid.uuid4()}", exact_replay=True,
            )
        except InvalidInput as exc:
            raise usage_error(in_option_terms(exc.message)) from None
        except DomainError as exc:
            raise CommandError(in_option_terms(exc.message), returncode=1) from None
        self.stdout.write(
            f"recorded entry #{entry.pk}: {budgeting.format_usd(entry.amount_usd)} {entry.operation} for {agent.slug}"
        )
        for budget in selectors.budgets_covering(agent_ids=[agent.pk]):
            status = selectors.budget_status(budget=budget)
            reached = ", ".join(f"{t.percent} %" for t in status.reached) or "none"
            self.stdout.write(
                f"budget '{budget.name}': {budgeting.format_usd(status.spent)} of {budgeting.format_usd(budget.amount_usd)} "
                f"({budgeting.format_percent(status.percent)}; thresholds reached: {reached})"
            )
