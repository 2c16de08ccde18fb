"""bench/a11y's verdict: a self-reload the page offers to stop is accepted, everything else counts."""

from __future__ import annotations

from bench.a11y.run import report

META_REFRESH = {"id": "meta-refresh", "impact": "critical", "help": "Delayed refresh under 20 hours must not be used",
                "nodes": ["meta"]}
CONTRAST = {"id": "color-contrast", "impact": "serious", "help": "Elements must meet minimum color contrast",
            "nodes": ["td > span"]}


def view(page: str, violations: list[dict], *, can_stop: bool) -> dict:
    return {"page": page, "path": "/", "scheme": "light", "width": 1280, "violations": violations,
            "horizontal_scroll": False, "can_stop_reloading": can_stop}


def test_a_self_reload_with_its_stop_button_is_accepted_and_the_rest_counts():
    said: list[str] = []
    assert report([view("fine-tuning job", [META_REFRESH], can_stop=True)], said.append) == 0
    assert "accepted: 1 meta-refresh" in said[-1] and "total: 0 violation(s)" in said[-1]

    assert report([view("job", [META_REFRESH], can_stop=False)], said.append) == 1  # no way to stop it: a finding
    assert report([view("job", [META_REFRESH, CONTRAST], can_stop=True)], said.append) == 1
    assert any("color-contrast" in line for line in said)
