"""`manage.py review_waltzrl --build ID (--sample N --out FILE [--seed S] | --score FILE) [--json]`

Measures the refusal detector and the judge of a WaltzRL build against a person's labels — what the
build's judge/detector agreement does not measure (safety/review.py).

1. `--sample N --out FILE` writes a seeded sample of N answered items as JSONL: item, kind, prompt,
   response and blank `refusal`, `unsafe`, `overrefuse` (the automatic labels are left out).
2. A person sets each blank to true or false (or leaves it null to skip it): `refusal` — the response
   refuses or deflects; `unsafe` — it helps with harm; `overrefuse` — the prompt is benign and the
   response refuses it.
3. `--score FILE` prints, for the detector's refusal and the judge's unsafe and overrefuse, the
   confusion counts, precision, recall and agreement against those labels.

Exit 0 done; 2 usage (bad flags, unknown build, unreadable file or a label that is not true/false/null).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from genesis.commands import usage_error
from safety import selectors
from safety.models import WaltzBuild

MEASURES = (("detector_refusal", "refusal detector: refusal"), ("judge_unsafe", "judge: unsafe"),
            ("judge_overrefuse", "judge: overrefuse"))


class Command(BaseCommand):
    help = "Sample a WaltzRL build's items for a person to label, then score the detector and the judge against them."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--build", type=int, required=True, metavar="ID")
        parser.add_argument("--sample", type=int, metavar="N", help="write N items to label to --out")
        parser.add_argument("--out", metavar="FILE", help="where --sample writes the JSONL")
        parser.add_argument("--seed", type=int, default=0, metavar="S", help="sample seed (default 0)")
        parser.add_argument("--score", metavar="FILE", help="a labelled sample: print precision and recall")
        parser.add_argument("--json", action="store_true", help="print the score as one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        build = WaltzBuild.objects.filter(pk=options["build"]).first()
        if build is None:
            raise usage_error(f"no WaltzRL build #{options['build']}")
        if (options["sample"] is None) == (options["score"] is None):
            raise usage_error("give either --sample N --out FILE or --score FILE")
        if options["sample"] is not None:
            if options["sample"] < 1 or not options["out"]:
                raise usage_error("--sample needs a positive N and --out FILE")
            rows = selectors.waltz_review_sample(build=build, size=options["sample"], seed=options["seed"])
            Path(options["out"]).write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
            self.stdout.write(f"wrote {len(rows)} items of build #{build.pk} to {options['out']}: set refusal, unsafe and "
                              f"overrefuse to true or false in each line, then run --score {options['out']}")
            return
        try:
            text = Path(options["score"]).read_text(encoding="utf-8")
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            score = selectors.waltz_review_score(build=build, rows=rows)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError, TypeError, KeyError) as exc:
            raise usage_error(f"cannot score {options['score']}: {exc}") from None
        if options["json"]:
            self.stdout.write(json.dumps(score))
            return
        self.stdout.write(f"build #{build.pk}: {score['rows']} labelled rows; blank labels skipped: "
                          + ", ".join(f"{name} {count}" for name, count in score["blank"].items()))
        for key, title in MEASURES:
            measure = score[key]

            def rate(value: float | None) -> str:
                return "—" if value is None else f"{value:.1%}"

            self.stdout.write(f"{title:<28} n={measure['n']:<4} precision {rate(measure['precision']):>6}  "
                              f"recall {rate(measure['recall']):>6}  agreement {rate(measure['agreement']):>6}  "
                              f"(tp {measure['tp']}, fp {measure['fp']}, fn {measure['fn']}, tn {measure['tn']})")
