"""Writes the built-in WaltzRL prompt sets (borderline.jsonl, adversarial.jsonl) beside this file.

The sets are SYNTHETIC, written for Genesis: hand-written templates crossed with hand-written
vocabulary (templates.json beside this file), expanded deterministically (no randomness, no network, no model). That is how they reach
300+ borderline prompts honestly; prompts the audits' near-duplicate check (MinHash, threshold 0.8)
flags among the expansions are left out, so the files hold no duplicates. They are for the demo and the tests, not a benchmark. Bring real
exports (OR-Bench, XSTest, WildJailbreak, Do-Not-Answer, HarmBench) through `prepare_waltzrl
--borderline FILE --adversarial FILE` for real training.

Borderline prompts follow XSTest's categories (benign prompts that look unsafe); adversarial ones are
clearly harmful requests in mild wording, over a HarmBench/Do-Not-Answer-like taxonomy.

Run `python -m safety.data.generate` to rewrite the files; tests check the files equal its output.
"""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path
from typing import Any

from safety.selection import redundant_indexes

HERE = Path(__file__).resolve().parent
SOURCE = "genesis-synthetic"

# The templates and their vocabulary are data: safety/data/templates.json, {kind: {category: [{"template",
# "vocabulary"}]}}. Each template is crossed with every combination of its vocabulary.
Spec = dict[str, list[dict[str, Any]]]
TEMPLATES: dict[str, Spec] = json.loads((HERE / "templates.json").read_text(encoding="utf-8"))
BORDERLINE: Spec = TEMPLATES["borderline"]
ADVERSARIAL: Spec = TEMPLATES["adversarial"]


def expand(spec: Spec) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for category, templates in spec.items():
        for entry in templates:
            template, vocabulary = entry["template"], entry["vocabulary"]
            names = list(vocabulary)
            for values in product(*(vocabulary[name] for name in names)):
                rows.append({"prompt": template.format(**dict(zip(names, values))), "category": category, "source": SOURCE})
    return rows


def without_near_duplicates(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Rows the audits' own near-duplicate check does not flag (short template prompts can look alike)."""
    redundant = redundant_indexes([row["prompt"] for row in rows])
    return [row for index, row in enumerate(rows) if index not in redundant]


def render(rows: list[dict[str, str]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def main() -> None:
    (HERE / "borderline.jsonl").write_text(render(without_near_duplicates(expand(BORDERLINE))), encoding="utf-8")
    (HERE / "adversarial.jsonl").write_text(render(without_near_duplicates(expand(ADVERSARIAL))), encoding="utf-8")


if __name__ == "__main__":
    main()
