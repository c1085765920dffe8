"""The docs check: README.md and docs/*.md point at things that exist.

- every relative link resolves: the file, and the heading where the link names an #anchor;
- every command in a shell code block names something real: a `leanscore` subcommand (and its
  options) of the Typer app, a `make` target of the Makefile, a `python -m` module, a file of
  the repository, or a known outside tool;
- every repository path written in code (`conf/...`, `notebooks/...`, ...) exists;
- README.md stays a front door: at most 200 lines, holding the generated headline's markers.

Fast: no Spark. Each check is a plain function, and a test feeds each one a broken input.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import shlex
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 200
HEADLINE_START = "<!-- headline:start -->"
HEADLINE_END = "<!-- headline:end -->"

# Pages other commands generate or other parts of the product write. A link to one is checked
# like any other once the page exists; until then it is allowed to be missing.
PAGES_WRITTEN_ELSEWHERE = {"docs/benchmarks.md", "docs/shadow.md", "docs/images.md"}

# Folders of the repository: a path in code starting with one of these must exist.
REPO_FOLDERS = ("conf/", "notebooks/", "tests/", "jobs/", "udfs/", "compression/", "docs/")
# Files at the repository's root that docs name.
ROOT_FILES = {"Makefile", "README.md", "pyproject.toml", "databricks.yml"}

# Commands from outside the project that the shell blocks may use.
OUTSIDE_COMMANDS = {
    "cd",
    "crontab",
    "databricks",
    "export",
    "git",
    "ls",
    "pip",
    "python",
    "python3",
    "spark-submit",
}
SHELL_LANGS = {"sh", "bash", "shell", "console"}


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


# --- reading markdown -----------------------------------------------------------------------

FENCE = re.compile(r"^(```|~~~)\s*([\w+-]*)")


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced code block."""
    blocks, lang, body, fence = [], None, [], None
    for line in text.splitlines():
        m = FENCE.match(line.strip())
        if fence is None and m:
            fence, lang, body = m.group(1), m.group(2).lower(), []
        elif fence is not None and line.strip().startswith(fence):
            blocks.append((lang, "\n".join(body)))
            fence = None
        elif fence is not None:
            body.append(line)
    return blocks


def prose(text: str) -> str:
    """The text outside fenced blocks, with inline code spans removed."""
    out, fence = [], None
    for line in text.splitlines():
        m = FENCE.match(line.strip())
        if fence is None and m:
            fence = m.group(1)
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        elif fence is None:
            out.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(out)


def inline_code(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", prose_with_code(text))


def prose_with_code(text: str) -> str:
    out, fence = [], None
    for line in text.splitlines():
        m = FENCE.match(line.strip())
        if fence is None and m:
            fence = m.group(1)
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        elif fence is None:
            out.append(line)
    return "\n".join(out)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|__", "", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose_with_code(text).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def broken_links(page: Path, text: str, root: Path = ROOT) -> list[str]:
    """Relative links of ``text`` (the page at ``page``) whose file or heading is missing."""
    bad = []
    for target in LINK.findall(prose(text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        rel = dest.relative_to(root).as_posix() if dest.is_relative_to(root) else str(dest)
        if not dest.exists():
            if rel not in PAGES_WRITTEN_ELSEWHERE:
                bad.append(f"{target}: no file {rel}")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            bad.append(f"{target}: no heading #{anchor} in {rel}")
    return bad


# --- what exists ----------------------------------------------------------------------------


@cache
def cli_commands() -> dict[str, object]:
    """The `leanscore` CLI's subcommands, as click commands (groups keep their own)."""
    import typer
    from leanscore.jobs.cli import app

    return dict(typer.main.get_command(app).commands)


@cache
def make_targets(makefile: Path = ROOT / "Makefile") -> frozenset[str]:
    names = set()
    for line in makefile.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-/ ]+):(?!=)", line)
        if m and not line.startswith("\t"):
            names.update(n for n in m.group(1).split() if not n.startswith("."))
    return frozenset(names)


def path_problem(token: str, root: Path = ROOT) -> str | None:
    """None when ``token`` is no repository path or one that exists; else what is wrong."""
    token = token.strip("\"'(),:;").removeprefix("./")
    if not (token.startswith(REPO_FOLDERS) or token in ROOT_FILES):
        return None
    if any(c in token for c in "<>{}$[]") or "..." in token:
        return None  # a placeholder, not a path
    if token in PAGES_WRITTEN_ELSEWHERE:
        return None
    token = token.split("#")[0].split("::")[0].rstrip("/")
    if "*" in token:
        return None if list(root.glob(token)) else f"nothing matches {token}"
    return None if (root / token).exists() else f"no file {token}"


# --- checking shell blocks ------------------------------------------------------------------


def shell_commands(body: str) -> list[list[str]]:
    """The simple commands of a shell block, as word lists: comments dropped, continuation
    lines joined, split on ;, &&, || and |."""
    joined = re.sub(r"\\\n", " ", body)
    commands = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            words = list(lexer)
        except ValueError:
            words = line.split()
        current: list[str] = []
        for word in words:
            if word and set(word) <= set(";&|"):
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(word)
        if current:
            commands.append(current)
    return commands


def command_problems(words: list[str], root: Path = ROOT) -> list[str]:
    """What is wrong with one simple command (its words), or nothing."""
    words = list(words)
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):  # VAR=value prefixes
        words.pop(0)
    if not words:
        return []
    head = words[0]
    if head.startswith("$") or head.startswith('"$'):
        return []  # a command a variable names, e.g. "$SPARK_HOME/bin/spark-submit"
    name = head.removeprefix(".venv/bin/")
    problems = [p for w in words[1:] if (p := path_problem(w, root))]
    notebooks = [w for w in words[1:] if w.startswith("notebooks/") and w.endswith(".py")]
    if notebooks and (root / notebooks[0]).is_file():
        problems += widget_problems(root / notebooks[0], words[words.index(notebooks[0]) + 1 :])
    if name == "leanscore":
        problems += leanscore_problems(words[1:])
    elif name == "make":
        for arg in words[1:]:
            if "=" in arg or arg.startswith("-"):
                continue
            if arg not in make_targets(root / "Makefile"):
                problems.append(f"make {arg}: no such Makefile target")
    elif name in {"python", "python3"} and "-m" in words:
        module = words[words.index("-m") + 1]
        if module not in {"pip", "pytest", "venv", "ruff"} and not module_exists(module):
            problems.append(f"python -m {module}: no such module")
    elif name in OUTSIDE_COMMANDS or name in {"pytest", "ruff"}:
        pass
    elif path_problem(head, root) is None and (root / head).exists():
        pass  # a file of the repository run as a command
    else:
        problems.append(f"{head}: not a command of the project or a known outside tool")
    return problems


def notebook_widgets(notebook: Path) -> set[str]:
    """The widget names a notebook declares: the keys of its ``widgets(globals(), {...})``."""
    names = set()
    for node in ast.walk(ast.parse(notebook.read_text())):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "widgets"
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Dict)
        ):
            names |= {k.value for k in node.args[1].keys if isinstance(k, ast.Constant)}
    return names


def widget_problems(notebook: Path, args: list[str]) -> list[str]:
    """A notebook run as a script takes ``--<widget> value``: each name must be a widget."""
    known = notebook_widgets(notebook)
    return [
        f"{notebook.name} {arg}: no such widget (known: {', '.join(sorted(known))})"
        for arg in (a.split("=")[0] for a in args)
        if arg.startswith("--") and arg[2:] not in known
    ]


def python_import_problems(body: str) -> list[str]:
    """``from leanscore... import a, b`` in a Python block: the module and names exist."""
    try:
        tree = ast.parse(body)
    except SyntaxError as err:
        return [f"a Python block does not parse: {err}"]
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("leanscore"):
            try:
                module = importlib.import_module(node.module)
            except ImportError:
                problems.append(f"from {node.module}: no such module")
                continue
            problems += [
                f"from {node.module} import {alias.name}: no such name"
                for alias in node.names
                if not hasattr(module, alias.name)
            ]
    return problems


def module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def leanscore_problems(args: list[str]) -> list[str]:
    if not args or args[0] in {"--help", "--version"}:
        return []
    commands = cli_commands()
    sub = args[0]
    if sub not in commands:
        return [f"leanscore {sub}: no such subcommand (known: {', '.join(sorted(commands))})"]
    command = commands[sub]
    rest = args[1:]
    if hasattr(command, "commands"):  # a group: leanscore report docs
        if rest and not rest[0].startswith("-") and rest[0] not in command.commands:
            return [f"leanscore {sub} {rest[0]}: no such subcommand"]
        return []
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    known.add("--help")
    return [
        f"leanscore {sub} {arg}: no such option"
        for arg in (a.split("=")[0] for a in rest)
        if arg.startswith("-") and arg not in known
    ]


def block_problems(text: str, root: Path = ROOT) -> list[str]:
    problems = []
    for lang, body in fenced_blocks(text):
        if lang in SHELL_LANGS:
            for words in shell_commands(body):
                problems += command_problems(words, root)
        else:  # YAML, Python: the repository paths they name must exist
            if lang == "python":
                problems += python_import_problems(body)
            for token in re.findall(r"[\w./*-]+", body):
                if p := path_problem(token, root):
                    problems.append(p)
    return problems


def code_path_problems(text: str, root: Path = ROOT) -> list[str]:
    return [
        p for code in inline_code(text) for word in code.split() if (p := path_problem(word, root))
    ]


def readme_problems(text: str) -> list[str]:
    problems = []
    lines = text.count("\n") + (0 if text.endswith("\n") else 1)
    if lines > README_MAX_LINES:
        problems.append(f"README.md has {lines} lines, more than {README_MAX_LINES}")
    start, end = text.count(HEADLINE_START), text.count(HEADLINE_END)
    if start != 1 or end != 1:
        problems.append(f"README.md needs each headline marker once ({start} start, {end} end)")
    elif text.index(HEADLINE_START) > text.index(HEADLINE_END):
        problems.append("README.md's headline end marker comes before its start")
    return problems


# --- the checks on the real docs ------------------------------------------------------------


def _ids(paths):
    return [p.relative_to(ROOT).as_posix() for p in paths]


@pytest.mark.parametrize("page", doc_files(), ids=_ids(doc_files()))
def test_links_resolve(page):
    assert broken_links(page, page.read_text()) == []


@pytest.mark.parametrize("page", doc_files(), ids=_ids(doc_files()))
def test_command_blocks_name_what_exists(page):
    assert block_problems(page.read_text()) == []


@pytest.mark.parametrize("page", doc_files(), ids=_ids(doc_files()))
def test_paths_in_code_exist(page):
    assert code_path_problems(page.read_text()) == []


def test_readme_is_a_front_door():
    assert readme_problems((ROOT / "README.md").read_text()) == []


def test_docs_folder_is_linked_from_readme():
    readme = (ROOT / "README.md").read_text()
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in LINK.findall(prose(readme))}
    unlinked = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in linked]
    assert unlinked == [], f"docs pages the README does not link: {unlinked}"


# --- each check can fail ----------------------------------------------------------------------


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "there.md").write_text("# Scheduling the job\n\ntext\n")
    page = tmp_path / "README.md"
    page.write_text("# leanscore\n")
    text = (
        "[ok](docs/there.md) [ok](docs/there.md#scheduling-the-job) [web](https://example.com)\n"
        "[gone](docs/missing.md) [no heading](docs/there.md#nowhere) [self](#absent)\n"
        "`[not a link](docs/in-code.md)`\n"
    )
    assert broken_links(page, text, root=tmp_path) == [
        "docs/missing.md: no file docs/missing.md",
        "docs/there.md#nowhere: no heading #nowhere in docs/there.md",
        "#absent: no heading #absent in README.md",
    ]


def test_an_unknown_subcommand_or_option_is_found():
    assert leanscore_problems(["score", "--config", "conf/nightly.yaml", "--run-date", "x"]) == []
    assert leanscore_problems(["--help"]) == []
    [problem] = leanscore_problems(["scroe", "--config", "conf/nightly.yaml"])
    assert problem.startswith("leanscore scroe: no such subcommand (known: ")
    assert "score" in problem
    assert leanscore_problems(["score", "--conifg", "x"]) == [
        "leanscore score --conifg: no such option"
    ]


def test_a_missing_file_target_or_tool_in_a_block_is_found():
    text = "\n".join(
        [
            "```sh",
            "make demo && make test   # both real",
            ".venv/bin/leanscore bench --config conf/bench.yaml --out bench-output",
            "make deploy",
            "leanscore score --config conf/no-such.yaml --run-date 2026-11-28",
            ".venv/bin/python notebooks/no_such.py --out /tmp/x",
            ".venv/bin/python -m leanscore.jobs.no_such_module",
            "frobnicate --all",
            ".venv/bin/python notebooks/score_table.py --run_date 2026-11-28 --no_such_widget 1",
            "```",
            "```yaml",
            "recipe: conf/recipes/not-shipped.yaml",
            "```",
        ]
    )
    assert block_problems(text) == [
        "make deploy: no such Makefile target",
        "no file conf/no-such.yaml",
        "no file notebooks/no_such.py",
        "python -m leanscore.jobs.no_such_module: no such module",
        "frobnicate: not a command of the project or a known outside tool",
        "score_table.py --no_such_widget: no such widget (known: artifact, config, input_path, "
        "input_table, output_path, output_table, run_date, set, summary_path)",
        "no file conf/recipes/not-shipped.yaml",
    ]


def test_a_missing_import_in_a_python_block_is_found():
    text = "\n".join(
        [
            "```python",
            "from leanscore.udfs import model_udf, score_dataframe",
            "from leanscore.udfs import no_such_function",
            "from leanscore.no_such_module import x",
            "```",
        ]
    )
    assert block_problems(text) == [
        "from leanscore.udfs import no_such_function: no such name",
        "from leanscore.no_such_module: no such module",
    ]


def test_a_missing_path_in_inline_code_is_found():
    text = "Edit `conf/pricing.yaml`, then `conf/recipes/wide-mlp-*.yaml`; not `conf/gone.yaml`.\n"
    assert code_path_problems(text) == ["no file conf/gone.yaml"]


def test_shell_commands_split_and_join():
    body = "A=1 make demo && \\\n  make test | tee log  # comment\n# only a comment\n"
    assert shell_commands(body) == [["A=1", "make", "demo"], ["make", "test"], ["tee", "log"]]


def test_a_long_readme_or_missing_markers_are_found():
    good = f"# leanscore\n{HEADLINE_START}\nfilled by a command\n{HEADLINE_END}\n"
    assert readme_problems(good) == []
    assert readme_problems(good + "line\n" * 200) == [
        f"README.md has 204 lines, more than {README_MAX_LINES}"
    ]
    assert readme_problems("# leanscore\n") == [
        "README.md needs each headline marker once (0 start, 0 end)"
    ]
    assert readme_problems(f"{HEADLINE_END}\n{HEADLINE_START}\n") == [
        "README.md's headline end marker comes before its start"
    ]
