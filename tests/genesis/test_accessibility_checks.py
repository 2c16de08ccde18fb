"""tests/accessibility.py, the checks the admin pages' tests run: each finds what it is for on a small
page and passes the same page made right."""

from __future__ import annotations

import pytest

from tests.accessibility import accessibility_problems

GOOD_CHART = ('<svg role="img" aria-labelledby="t" aria-describedby="d"><title id="t">Spend</title>'
              '<desc id="d">qa_agent $6.20</desc><rect></rect></svg>')


@pytest.mark.parametrize(("html", "problem"), [
    ('<svg role="img" aria-label="spend"><rect></rect></svg>', "has no <title>"),
    ('<svg role="img" aria-labelledby="t"><title id="t">Spend</title></svg>', "neither a <desc> nor a data table"),
    ('<svg role="img" aria-labelledby="t" aria-describedby="x"><title id="t">Spend</title></svg>', "names #x, which is not on the page"),
    ("<table><tr><th>agent</th></tr></table>", "has no scope"),
    ('<form><input type="text" name="reason" placeholder="why roll back"></form>', "has no label"),
    ('<form><select name="metric"></select></form>', "has no label"),
    ('<button type="submit" class="button"></button>', "has no accessible name"),
    ('<button class="button" style="background: var(--delete-button-bg);">Roll back</button>', "hides its keyboard focus"),
    ('<span class="tone tone-bad"></span>', "by colour without text"),
    ("<style>.hold-clear { color: #2e7d32; font-weight: bold; }</style>", "fixed text colour #2e7d32"),
    ('<strong style="color:#c62828">failed</strong>', "fixed text colour #c62828"),
    # The theme's background is no fixed one, however the spaces around it fall (a lookahead once lost to backtracking).
    ("<style>.x{background: var(--body-bg); color:#777}</style>", "fixed text colour #777"),
    ('<span style="background-color:  var(--body-bg);color: #777">late</span>', "fixed text colour #777"),
    ("<style>.x { background: transparent; color: #777; }</style>", "fixed text colour #777"),
])
def test_each_check_finds_its_problem(html, problem):
    problems = accessibility_problems(html)
    assert any(problem in found for found in problems), problems


@pytest.mark.parametrize("html", [
    GOOD_CHART,
    ('<svg role="img" aria-labelledby="t" aria-describedby="n"><title id="t">Spend</title></svg>'
     '<details><table id="n"><tr><th scope="col">day</th></tr></table></details>'),
    '<table><tr><th scope="row">agent</th><td>qa_agent</td></tr></table>',
    '<label for="r">Reason</label><input type="text" id="r" name="reason">',
    '<label>Reason <textarea name="reason"></textarea></label>',
    '<input type="text" name="reason" aria-label="why roll back qa_agent"><input type="hidden" name="next">',
    '<button class="button danger">Roll back<span class="visually-hidden"> qa_agent</span></button><input type="submit" value="Go">',
    '<span class="tone tone-bad">FAIL</span>',
    "<style>.hold-clear { color: var(--genesis-ok-fg); } .bm-PASS { background: #2e7d32; color: #fff; }</style>",
    "<style>.bm-FAIL{background:#c62828;color:#fff} .bm-none { background-color : #666; color: #fff; }</style>",
])
def test_a_page_made_right_passes(html):
    assert accessibility_problems(html) == []
