"""The documentation stays true: docs/cli.md is what the CLI's help generates, every relative link and anchor in
README.md and docs/ resolves, every `fltool` command they show parses against the CLI, and the README stays short."""
from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOC_PAGES = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOC_PAGES]
README_MAX_LINES = 220


def _cli_reference():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "scripts" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- Markdown, as GitHub reads it -------------------------------------------------------------------------------

FENCE = re.compile(r"^\s*(```|~~~)")


def prose_lines(text: str) -> Iterator[Tuple[int, str]]:
    """(line number, line) outside fenced code blocks, inline code spans blanked."""
    in_fence = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            yield number, re.sub(r"`[^`]*`", "``", line)


def prose_lines_keeping_code(text: str) -> Iterator[Tuple[int, str]]:
    """(line number, line) outside fenced code blocks, inline code kept."""
    in_fence = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            yield number, line


def code_lines(text: str) -> Iterator[Tuple[int, str]]:
    """(line number, logical line) inside fenced code blocks; a trailing backslash continues the line."""
    in_fence, pending, start = False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            in_fence, pending = not in_fence, ""
            continue
        if not in_fence:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield start, pending + line
        pending = ""


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lowercase, punctuation removed, each space to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link's text
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set:
    """Every heading's anchor in a Markdown file, with GitHub's -1, -2 for repeats."""
    seen: Dict[str, int] = {}
    out = set()
    in_fence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        match = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if in_fence or not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def relative_links(path: Path) -> Iterator[Tuple[int, str]]:
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for target in LINK.findall(line):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: are not checked
                yield number, target


def broken_links(path: Path, root: Path = ROOT) -> List[str]:
    problems = []
    for number, target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(root)}:{number}: {target}"
        if not dest.exists():
            problems.append(f"{where}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where}: no heading with anchor #{anchor} in {dest.relative_to(root)}")
    return problems


def shown_commands(path: Path) -> Iterator[Tuple[int, List[str]]]:
    """The fltool command lines of a page's code blocks (`fltool ...`, `$ fltool ...`, `torchrun ... -m fltool ...`),
    as the arguments after `fltool`; comments and anything after a `;` dropped. Output lines are indented or do not
    start with a command, so they are not taken."""
    for number, line in code_lines(path.read_text(encoding="utf-8")):
        line = line[2:] if line.startswith("$ ") else line
        if not re.match(r"^(fltool|torchrun|\.venv/bin/fltool)\s", line):
            continue
        tokens = shlex.split(line, comments=True)
        if "fltool" in tokens[:1] or ".venv/bin/fltool" in tokens[:1]:
            args = tokens[1:]
        elif "-m" in tokens and tokens[tokens.index("-m") + 1] == "fltool":
            args = tokens[tokens.index("-m") + 2:]
        else:
            continue
        cut = next((i for i, t in enumerate(args) if t.endswith(";")), None)
        if cut is not None:
            args = args[:cut] + [args[cut][:-1]]
        yield number, args


def parse_with_cli(args: List[str]) -> None:
    """Parse a command line as `fltool` would (options, types, choices), without running it."""
    import typer

    from fltool.cli.main import app

    command = typer.main.get_command(app)
    ctx = command.context_class(command, info_name="fltool")
    while hasattr(command, "list_commands"):
        assert args, f"a group without a subcommand: {ctx.command_path}"
        name, args = args[0], args[1:]
        sub = command.get_command(ctx, name)
        assert sub is not None, f"no command '{name}' in {ctx.command_path} ({', '.join(command.list_commands(ctx))})"
        command, ctx = sub, sub.context_class(sub, info_name=name, parent=ctx)
    command.make_context(ctx.info_name, list(args), parent=ctx.parent)


# --- the tests ------------------------------------------------------------------------------------------------


def test_cli_reference_is_what_the_help_generates():
    module = _cli_reference()
    diff = module.check()
    assert diff is None, "docs/cli.md is stale; run .venv/bin/python scripts/cli_reference.py\n" + diff[:4000]


def test_cli_reference_check_fails_on_a_stale_file_and_passes_on_a_fresh_one(tmp_path, capsys):
    module = _cli_reference()
    out = tmp_path / "cli.md"
    assert module.main(["--out", str(out)]) == 0
    assert module.main(["--check", "--out", str(out)]) == 0
    out.write_text(out.read_text().replace("Usage: fltool train", "Usage: fltool trian"))
    assert module.main(["--check", "--out", str(out)]) == 1
    assert "+Usage: fltool train" in capsys.readouterr().out


def test_cli_reference_documents_every_command_and_option():
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for heading in ("### fltool train", "#### fltool bench speed-accuracy", "#### fltool analyze loss-cdf",
                    "#### fltool data check", "### fltool sweep"):
        assert f"\n{heading}\n" in text
    assert "| `-s, --set <list[str]>` |" in text and "| `--check / --no-check` |" in text
    assert "\x1b[" not in text and "╭" not in text  # no ANSI colour, no rich panels


@pytest.mark.parametrize("heading, anchor", [
    ("Table 1a: alpha-balanced cross entropy (gamma = 0)", "table-1a-alpha-balanced-cross-entropy-gamma--0"),
    ("`fltool data synth OUT_DIR` and `fltool data check CONFIG|ANN_JSON`",
     "fltool-data-synth-out_dir-and-fltool-data-check-configann_json"),
    ("A real run: BCCD through `--data`", "a-real-run-bccd-through---data"),
])
def test_slug_follows_githubs_rules(heading, anchor):
    assert slug(heading) == anchor


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    assert broken_links(page) == []


def test_a_broken_link_or_anchor_is_reported(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n\n## A section: with `code`\n")
    page.write_text("# Page\n\n[ok](other.md#a-section-with-code) [gone](missing.md) [bad](other.md#nope)\n"
                    "`[in code](missing.md)`\n\n```\n[in a block](missing.md)\n```\n")
    problems = broken_links(page, root=tmp_path.resolve())
    assert problems == ["page.md:3: missing.md: no such file",
                        "page.md:3: other.md#nope: no heading with anchor #nope in other.md"]


@pytest.mark.parametrize("page", [p for p in PAGES if p.name != "cli.md"], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_fltool_command_shown_parses(page):
    failures = []
    for number, args in shown_commands(page):
        try:
            parse_with_cli(args)
        except Exception as exc:  # a usage error, an unknown command or option
            failures.append(f"{page.relative_to(ROOT)}:{number}: fltool {shlex.join(args)}: {exc}")
    assert failures == []


def test_readme_shows_the_tour_and_its_commands_parse():
    commands = [args[0] for _, args in shown_commands(README)]
    for name in ("train", "eval", "predict", "export", "analyze", "sweep"):
        assert name in commands


def test_a_command_with_an_unknown_option_does_not_parse():
    with pytest.raises(Exception, match="--no-such-option"):
        parse_with_cli(["train", "--no-such-option"])
    with pytest.raises(AssertionError, match="no command 'trian'"):
        parse_with_cli(["trian"])


REPO_PATH = re.compile(r"`((?:fltool|plugins|scripts|benchmarks|configs|tests|docs)/[^`\s<>*]*)`")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_repository_path_named_in_prose_exists(page):
    """`fltool/engine/compat.py`, `scripts/setup.sh`, `configs/paper/`: a path the docs name is where they say."""
    text = "\n".join(line for _, line in prose_lines_keeping_code(page.read_text(encoding="utf-8")))
    missing = sorted({m.rstrip(".,:;") for m in REPO_PATH.findall(text) if not (ROOT / m.rstrip(".,:;")).exists()})
    assert missing == []


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"
