"""What a rendered admin page must give people who use a screen reader, a keyboard or dark mode — the
checks axe-core cannot make, or that need no browser (bench/a11y/run.py runs axe-core itself):

    problems = accessibility_problems(response.content.decode())
    assert problems == []

Parsed with the standard library's html.parser into a small tree; each check returns sentences that
name the element, so a failure says what to fix."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
UNLABELLED_INPUT_TYPES = {"hidden", "submit", "button", "reset", "image"}
# Status words whose colour repeats them; the word itself must be there (WCAG 1.4.1).
STATUS_CLASSES = re.compile(r"\b(tone|bm-verdict|severity-\w+|hold-(open|clear)|state-\w+)\b")


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def iter(self):
        yield self
        for child in self.children:
            yield from child.iter()

    def all_text(self) -> str:
        return " ".join(part for node in self.iter() for part in node.text).strip()

    def ancestors(self):
        node = self.parent
        while node is not None:
            yield node
            node = node.parent

    def describe(self) -> str:
        shown = " ".join(f'{k}="{v}"' for k, v in self.attrs.items() if k in ("id", "name", "class", "type", "data-testid"))
        return f"<{self.tag}{' ' + shown if shown else ''}>"


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.current = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, parent=self.current)
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.current.children.append(Node(tag, {k: v or "" for k, v in attrs}, parent=self.current))

    def handle_endtag(self, tag: str) -> None:
        for node in [self.current, *self.current.ancestors()]:
            if node.tag == tag:
                self.current = node.parent or self.root
                return

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.current.text.append(data.strip())


def parse(html: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


def _by_id(root: Node) -> dict[str, Node]:
    return {node.attrs["id"]: node for node in root.iter() if "id" in node.attrs}


def _references(root: Node, ids: dict[str, Node]) -> list[str]:
    """aria-labelledby / aria-describedby naming an id the page does not have."""
    problems = []
    for node in root.iter():
        for attribute in ("aria-labelledby", "aria-describedby"):
            for ref in node.attrs.get(attribute, "").split():
                if ref not in ids:
                    problems.append(f"{node.describe()} {attribute} names #{ref}, which is not on the page")
    return problems


def _charts(root: Node, ids: dict[str, Node]) -> list[str]:
    """An SVG drawn as an image has a <title> that names it and a <desc> or a data table that gives its
    numbers (WCAG 1.1.1): role="img" hides everything inside it, the bars' own titles included."""
    problems = []
    for svg in (node for node in root.iter() if node.tag == "svg" and node.attrs.get("role") == "img"):
        titles = [child for child in svg.children if child.tag == "title" and child.all_text()]
        described = [ids[ref] for ref in svg.attrs.get("aria-describedby", "").split() if ref in ids]
        descs = [child for child in svg.children if child.tag == "desc" and child.all_text()]
        if not titles:
            problems.append(f"{svg.describe()} (role=img) has no <title>")
        elif "aria-labelledby" not in svg.attrs or titles[0].attrs.get("id") not in svg.attrs["aria-labelledby"].split():
            problems.append(f"{svg.describe()} is not labelled by its <title> (aria-labelledby)")
        if not descs and not any(node.tag == "table" for node in described):
            problems.append(f"{svg.describe()} (role=img) has neither a <desc> nor a data table of its numbers")
        if descs and not described:
            problems.append(f"{svg.describe()} does not point at its <desc> (aria-describedby)")
    return problems


def _table_headers(root: Node) -> list[str]:
    """Every header cell says what it heads (scope), so a screen reader reads it with each cell."""
    return [f"{th.describe()} “{th.all_text()[:40]}” has no scope" for th in root.iter()
            if th.tag == "th" and th.attrs.get("scope") not in ("col", "row", "colgroup", "rowgroup")]


def _labels(root: Node, ids: dict[str, Node]) -> list[str]:
    """Every field has a name a screen reader reads: a <label for>, a wrapping <label>, aria-label or
    aria-labelledby — a placeholder is not one (it disappears as one types)."""
    labelled = {node.attrs.get("for") for node in root.iter() if node.tag == "label"}
    problems = []
    for node in root.iter():
        if node.tag not in ("input", "select", "textarea"):
            continue
        if node.tag == "input" and node.attrs.get("type", "text") in UNLABELLED_INPUT_TYPES:
            continue
        if (node.attrs.get("aria-label", "").strip() or node.attrs.get("aria-labelledby")
                or node.attrs.get("id") in labelled or any(a.tag == "label" for a in node.ancestors())):
            continue
        problems.append(f"{node.describe()} has no label")
    return problems


def _buttons(root: Node) -> list[str]:
    """Every button has a name, and none hides Django's hover/focus change behind an inline background."""
    problems = []
    for node in root.iter():
        is_button = node.tag == "button" or (node.tag == "input" and node.attrs.get("type") in ("submit", "button"))
        if not is_button:
            continue
        name = node.all_text() if node.tag == "button" else node.attrs.get("value", "")
        if not (name.strip() or node.attrs.get("aria-label", "").strip()):
            problems.append(f"{node.describe()} has no accessible name")
        if "background" in node.attrs.get("style", ""):
            problems.append(f"{node.describe()} sets its background inline, which hides its keyboard focus")
    return problems


def _status_words(root: Node) -> list[str]:
    """A status shown in colour says itself in words too."""
    return [f"{node.describe()} shows a status by colour without text" for node in root.iter()
            if STATUS_CLASSES.search(node.attrs.get("class", "")) and not node.all_text()]


_RULE = re.compile(r"([^{}]+)\{([^{}]*)\}")
_FIXED_COLOUR = re.compile(r"(?<![-\w])color\s*:\s*(#[0-9a-fA-F]{3,8}|rgb|hsl|[a-z]+\s*[;}]?)")
# A background the rule fixes itself. The negative lookahead sits right after the colon and swallows the
# spaces itself: written `:\s*(?!var)`, the regex backtracks the spaces and `background: var(--x)` matched,
# so a theme's background passed as fixed. Keywords that fix no background do not count either.
_FIXED_BACKGROUND = re.compile(
    r"(?<![-\w])background(-color)?\s*:(?!\s*(?:var\(|(?:transparent|inherit|initial|unset|none|currentcolor)\b))", re.I)


def _fixed_colours(root: Node) -> list[str]:
    """Text colours of our own CSS come from the admin's variables (or ours in base_site.html), which
    Django switches for dark mode — unless the same rule fixes the background too: a fixed colour on the
    theme's background loses its contrast in one of the two themes."""
    problems = []
    css = [(style.all_text(), "<style>") for style in root.iter() if style.tag == "style"]
    css += [(f"x {{{node.attrs['style']}}}", node.describe()) for node in root.iter() if "color" in node.attrs.get("style", "")]
    for text, where in css:
        for selector, body in _RULE.findall(text):
            for match in _FIXED_COLOUR.finditer(body):
                value = match.group(1).strip(" ;}")
                if value in ("inherit", "currentcolor", "transparent", "var"):
                    continue
                if _FIXED_BACKGROUND.search(body):
                    continue  # its own background: the pair keeps its contrast in both themes
                problems.append(f"{where} {selector.strip()[:60]}: fixed text colour {value}")
    return problems


_META_REFRESH = re.compile(r'<meta http-equiv="refresh" content="(\d+)(?:; url=([^"]*))?">')


def self_reload(html: str) -> tuple[int, str] | None:
    """When a page that reloads itself (admin/includes/auto_refresh_meta.html) does, in seconds, and
    where to (the address unescaped; "" for the page itself); None for a page that does not."""
    match = _META_REFRESH.search(html)
    return (int(match.group(1)), (match.group(2) or "").replace("&amp;", "&")) if match else None


def accessibility_problems(html: str) -> list[str]:
    """Every problem of the page the checks above find, as sentences; [] when there is none."""
    root = parse(html)
    ids = _by_id(root)
    return [
        *_references(root, ids), *_charts(root, ids), *_table_headers(root), *_labels(root, ids),
        *_buttons(root), *_status_words(root), *_fixed_colours(root),
    ]
