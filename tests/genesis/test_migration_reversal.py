"""Reversing costs 0007 (and models_app 0010, the same operation) made the history reasons
varchar(100) again; PostgreSQL's cast cut every longer reason to 100 characters without a word
(data-lifecycle review, finding 5: a 150-character reason read back 100 long). The reversal now
refuses while a longer reason exists. On the embedded SQLite database, in child processes: the guard
is the migration's own, the same on either database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import child_environment

ROOT = Path(__file__).resolve().parents[2]

LONG_REASON = """
from decimal import Decimal
from costs.models import Budget
Budget.objects.create(name="default", amount_usd=Decimal("30"), thresholds=[50])
Budget.history.update(history_change_reason="raised for the WaltzRL build: " + "x" * 120)
"""


def test_reversing_the_whole_reasons_migration_refuses_to_cut_a_longer_reason(tmp_path):
    env = child_environment(DATABASE_URL=f"sqlite:///{tmp_path / 'embedded.sqlite3'}")

    def manage(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "manage.py", *arguments], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=240)

    assert manage("migrate", "-v0", "--noinput").returncode == 0
    assert manage("shell", "-v0", "-c", LONG_REASON).returncode == 0

    reversal = manage("migrate", "costs", "0006", "-v0", "--noinput")

    assert reversal.returncode != 0
    assert "not reversing costs 0007_history_change_reason_whole" in reversal.stderr
    assert "historicalbudget: 1" in reversal.stderr
    kept = manage("shell", "-v0", "-c", "from costs.models import Budget; print(len(Budget.history.get().history_change_reason))")
    assert kept.stdout.split() == ["150"]
