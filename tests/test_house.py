"""House rules that the linters do not state, checked over the project's own code (not tests/,
migrations or bench/):

- no module over 800 lines, unless a `# Long: <why>` comment stands among its first 50 lines;
- no function over 60 lines, unless the comment line just above its `def` (or its decorators)
  starts with `# Long:` and says why;
- a `# noqa: C901` (ruff's complexity limit, 15) says why after the code;
- no import of a project module inside a function unless the line, or the comment just above its
  group of imports, says `# import here: <why>` — an import placed there to dodge a cycle is still a
  cycle (GUIDE, "The house");
- no CSV written but through genesis.spreadsheets.csv_writer, which keeps a cell a spreadsheet would
  run as a formula text.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("genesis", "models_app", "experiments", "costs", "audits", "safety", "launch")
MAX_MODULE_LINES = 800
MAX_FUNCTION_LINES = 60
LONG_MARKER = "# Long:"
IMPORT_HERE = re.compile(r"#\s*import here:\s*\S")
NOQA_C901 = re.compile(r"#\s*noqa:[^#]*\bC901\b(.*)$")


def _sources() -> list[Path]:
    return sorted(
        path for app in APPS for path in (ROOT / app).rglob("*.py")
        if "migrations" not in path.relative_to(ROOT).parts
    )


SOURCES = _sources()
_PARSED: dict[Path, tuple[list[str], ast.Module]] = {}


def _parsed(path: Path) -> tuple[list[str], ast.Module]:
    if path not in _PARSED:
        text = path.read_text(encoding="utf-8")
        _PARSED[path] = (text.splitlines(), ast.parse(text, filename=str(path)))
    return _PARSED[path]


def _functions(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def test_the_house_has_sources() -> None:
    # Guards the checks below against passing on an empty list (a wrong ROOT, a renamed app).
    assert len(SOURCES) > 100
    assert {path.relative_to(ROOT).parts[0] for path in SOURCES} == set(APPS)


def _gives_a_reason(line: str) -> bool:
    line = line.strip()
    return line.startswith(LONG_MARKER) and bool(line[len(LONG_MARKER):].strip())


def test_no_module_is_over_800_lines_without_a_reason() -> None:
    too_long = [
        f"{path.relative_to(ROOT)}: {len(lines)} lines"
        for path in SOURCES
        if len(lines := _parsed(path)[0]) > MAX_MODULE_LINES and not any(map(_gives_a_reason, lines[:50]))
    ]
    assert not too_long, (
        f"modules over {MAX_MODULE_LINES} lines: split them by responsibility, or put a `{LONG_MARKER} <reason>` "
        "comment among their first 50 lines:\n" + "\n".join(too_long)
    )


def _function_length(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    assert node.end_lineno is not None
    return node.end_lineno - node.lineno + 1


def _explained_as_long(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """True when the line above the function's first decorator (or its `def`) is a `# Long:` comment
    that gives a reason."""
    first = min([node.lineno, *(decorator.lineno for decorator in node.decorator_list)])
    return first >= 2 and _gives_a_reason(lines[first - 2])


def test_no_function_is_over_60_lines_without_a_reason() -> None:
    too_long = []
    for path in SOURCES:
        lines, tree = _parsed(path)
        for node in _functions(tree):
            length = _function_length(node)
            if length > MAX_FUNCTION_LINES and not _explained_as_long(lines, node):
                too_long.append(f"{_where(path, node.lineno)} {node.name}: {length} lines")
    assert not too_long, (
        f"functions over {MAX_FUNCTION_LINES} lines: split them, or put a `{LONG_MARKER} <reason>` comment "
        "on the line above the def (or its decorators):\n" + "\n".join(too_long)
    )


def test_complexity_exemptions_give_a_reason() -> None:
    bare = []
    for path in SOURCES:
        for number, line in enumerate(_parsed(path)[0], start=1):
            match = NOQA_C901.search(line)
            if match and not re.search(r"[A-Za-z]{3}", match.group(1)):
                bare.append(_where(path, number))
    assert not bare, "`# noqa: C901` without a reason after it:\n" + "\n".join(bare)


def _project_modules(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.ImportFrom):
        names = [node.module or ""] if node.level == 0 else []
    else:
        names = [alias.name for alias in node.names]
    return [name for name in names if name.split(".")[0] in APPS]


def _comment_above_import_block(lines: list[str], lineno: int) -> str:
    """The comment lines just above the block of imports holding line `lineno` (1-based): one
    `# import here:` may explain a group of imports."""
    index = lineno - 2
    while index >= 0 and lines[index].strip().startswith(("from ", "import ")):
        index -= 1
    comment = []
    while index >= 0 and lines[index].strip().startswith("#"):
        comment.append(lines[index])
        index -= 1
    return " ".join(reversed(comment))


def _unexplained_imports(lines: list[str], tree: ast.Module) -> list[tuple[int, str, list[str]]]:
    """(line, function, modules) of each project import inside a function without `# import here:`."""
    found: dict[int, tuple[int, str, list[str]]] = {}
    # ast.walk lists outer functions before the ones nested in them, and reaches an import in a nested
    # function from both: the last one written, the innermost, names it.
    for function in _functions(tree):
        for node in ast.walk(function):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or not (modules := _project_modules(node)):
                continue
            assert node.end_lineno is not None
            if not (
                any(IMPORT_HERE.search(line) for line in lines[node.lineno - 1 : node.end_lineno])
                or IMPORT_HERE.search(_comment_above_import_block(lines, node.lineno))
            ):
                found[node.lineno] = (node.lineno, function.name, modules)
    return sorted(found.values())


def test_no_project_import_inside_a_function_without_a_reason() -> None:
    hidden = [
        f"{_where(path, line)} in {name}: {', '.join(modules)}"
        for path in SOURCES for line, name, modules in _unexplained_imports(*_parsed(path))
    ]
    assert not hidden, (
        "project imports inside functions: move them to the top of the module, or say why with "
        "`# import here: <reason>` on the import:\n" + "\n".join(hidden)
    )


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("def f():\n    from costs import services\n", True),
        ("def f():\n    from costs import services  # import here: the task module imports this one\n", False),
        ("def f():\n    from costs import (\n        services,  # import here: the task module imports this one\n    )\n", False),
        ("def f():\n    import json\n", False),
        ("def f():\n    from . import services\n", False),
        ("def f():\n    def g():\n        import genesis.errors\n", True),
        ("from costs import services\n", False),
    ],
)
def test_project_import_check_reads_what_it_should(source: str, found: bool) -> None:
    assert bool(_unexplained_imports(source.splitlines(), ast.parse(source))) is found


def test_long_marker_must_give_a_reason() -> None:
    body = "\n".join(f"    x{index} = {index}" for index in range(MAX_FUNCTION_LINES))
    explained = ast.parse(f"# Long: one table, read top to bottom\ndef f():\n{body}\n")
    bare = ast.parse(f"# Long:\ndef f():\n{body}\n")
    decorated = ast.parse(f"# Long: a table\n@staticmethod\ndef f():\n{body}\n")
    for tree, source_lines, expected in (
        (explained, ["# Long: one table, read top to bottom", "def f():"], True),
        (bare, ["# Long:", "def f():"], False),
        (decorated, ["# Long: a table", "@staticmethod", "def f():"], True),
    ):
        (function,) = _functions(tree)
        assert _function_length(function) > MAX_FUNCTION_LINES
        assert _explained_as_long(source_lines, function) is expected


SPREADSHEETS = ROOT / "genesis" / "spreadsheets.py"
_CSV_WRITERS = {"writer", "DictWriter"}


def _csv_writers_made(tree: ast.Module) -> list[int]:
    """Lines that make a writer of the csv module itself (`csv.writer(…)`, `csv.DictWriter(…)`, or one
    imported from csv)."""
    imported = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == "csv"
                for alias in node.names if alias.name in _CSV_WRITERS}
    return [
        node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call) and (
            (isinstance(node.func, ast.Attribute) and node.func.attr in _CSV_WRITERS
             and isinstance(node.func.value, ast.Name) and node.func.value.id == "csv")
            or (isinstance(node.func, ast.Name) and node.func.id in imported)
        )
    ]


def test_every_csv_is_written_through_the_spreadsheet_safe_writer() -> None:
    direct = [_where(path, line) for path in SOURCES if path != SPREADSHEETS for line in _csv_writers_made(_parsed(path)[1])]
    assert not direct, (
        "CSV written with the csv module's own writer: use genesis.spreadsheets.csv_writer, which keeps a text "
        "cell starting with = + - @ from being run as a formula:\n" + "\n".join(direct)
    )
    assert _csv_writers_made(_parsed(SPREADSHEETS)[1])  # the check finds what it looks for


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("import csv\ncsv.writer(out)\n", True),
        ("import csv\ncsv.DictWriter(out, fieldnames=[])\n", True),
        ("from csv import writer as w\nw(out)\n", True),
        ("from genesis.spreadsheets import csv_writer\ncsv_writer(out)\n", False),
        ("import csv\ncsv.reader(source)\n", False),
    ],
)
def test_csv_writer_check_reads_what_it_should(source: str, found: bool) -> None:
    assert bool(_csv_writers_made(ast.parse(source))) is found
