"""The README's and the docs pages' snippets stay true: their Python runs as written, the quick start's
commands run, every `pulse ...` line anywhere in them names commands and options that exist, and every link
between them leads to a file and heading that exist.

Cheap by design: the folder the snippets run in is laid out as `make demo-untrained` leaves a clone (the demo
generator in weights/demo, with a small gaussian fit beside it instead of the cached one, examples/crops,
demo-out/); the Python snippet asks for few steps itself, and the quick start's `pulse upsample` lines get `--steps 2`.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from pulse_cli.cli import app

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 300  # what a newcomer reads; the reference is in docs/


def blocks(page: Path = README) -> list[tuple[str, str, str]]:
    """(section heading, language, code) of every fenced block of a page, in order."""
    found, section, lines, language, code = [], "", page.read_text("utf-8").splitlines(), None, []
    for line in lines:
        if language is None and line.startswith("#"):
            section = line.lstrip("#").strip()
        elif line.startswith("```"):
            if language is None:
                language, code = line[3:].strip(), []
            else:
                found.append((section, language, "\n".join(code)))
                language = None
        elif language is not None:
            code.append(line)
    return found


def pulse_lines(code: str) -> list[list[str]]:
    """The `pulse ...` command lines of a shell block, as argv after `pulse` (env assignments and comments
    dropped)."""
    commands = []
    for line in code.splitlines():
        words = shlex.split(line, comments=True)
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
            words = words[1:]
        if words and words[0] == "pulse":
            commands.append(words[1:words.index("|")] if "|" in words else words[1:])
    return commands


@pytest.fixture
def after_make_demo(tmp_path, demo_checkpoint, monkeypatch):
    """A folder laid out as a clone after `make demo`, as the working directory."""
    shutil.copytree(demo_checkpoint.parent, tmp_path / "weights" / "demo")
    shutil.copytree(REPO / "examples" / "crops", tmp_path / "examples" / "crops")
    (tmp_path / "demo-out").mkdir()
    monkeypatch.setenv("PULSE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PULSE_CHECKPOINT", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_pages_have_the_snippets_this_test_runs():
    assert len(README.read_text("utf-8").splitlines()) < README_MAX_LINES
    languages = [language for page in PAGES for _, language, _ in blocks(page)]
    assert languages.count("python") >= 1
    assert any(section.startswith("From a folder of face crops") for section, _, _ in blocks())


def test_python_snippets_run_as_written_after_make_demo(after_make_demo, capsys):
    snippets = [(page, code) for page in PAGES for _, language, code in blocks(page) if language == "python"]
    for page, code in snippets:
        exec(compile(code, str(page), "exec"), {"__name__": "__readme__"})
    assert (after_make_demo / "demo-out" / "astronaut.api.png").is_file()
    first = capsys.readouterr().out.splitlines()[0]
    assert first == "128 fast 1"  # what the snippet's comment says it prints


QUICK_START = ("From a folder of face crops", "From photos", "With real weights")
# Quick-start lines this test cannot run: the network, and what the download would have left.
NEEDS_THE_NETWORK = ("weights download", "~/.cache/pulse-cli")


def test_quick_start_commands_run_after_make_demo(after_make_demo):
    from PIL import Image
    from skimage import data

    (after_make_demo / "photos").mkdir()
    Image.fromarray(data.astronaut()).save(after_make_demo / "photos" / "astronaut.png")
    ran = []
    for section, language, code in blocks():
        if section not in QUICK_START or language != "sh":
            continue
        for argv in pulse_lines(code):
            if any(skip in " ".join(argv) for skip in NEEDS_THE_NETWORK):
                continue
            if argv[0] == "upsample" and "--steps" not in argv:
                argv = [*argv, "--steps", "2"]  # cheap; the command is otherwise as written
            result = CliRunner().invoke(app, argv)
            assert result.exit_code == 0, (argv, result.stderr)
            ran.append(argv[0])
    assert ran.count("upsample") >= 2 and "weights" in ran
    assert (after_make_demo / "out" / "astronaut.png.png").is_file()
    assert (after_make_demo / "out" / "sheet.png").is_file()


def _resolve(argv: list[str]):
    command, rest = typer.main.get_command(app), list(argv)
    while rest and hasattr(command, "commands") and rest[0] in command.commands:
        command = command.commands[rest.pop(0)]
    return command, rest


def test_every_pulse_line_names_real_commands_and_options():
    checked = 0
    for section, language, code in (block for page in PAGES for block in blocks(page)):
        if language not in ("", "sh", "bash"):
            continue
        for argv in pulse_lines(code):
            command, rest = _resolve(argv)
            assert not hasattr(command, "commands") or not rest or rest[0].startswith("-"), (section, argv)
            known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
            for word in rest:
                option = word.strip("[]").split("=")[0]
                if option.startswith("-") and option not in ("-", "--"):
                    assert option in known, (section, argv, option)
            checked += 1
    assert checked >= 15


def _slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text("utf-8"), flags=re.MULTILINE | re.DOTALL)
    return {_slug(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def test_every_link_between_the_pages_leads_somewhere():
    """Relative links of README.md, docs/*.md and bench/README.md: the file exists and so does the heading."""
    checked = 0
    for page in [*PAGES, REPO / "bench" / "README.md"]:
        text = re.sub(r"^```.*?^```", "", page.read_text("utf-8"), flags=re.MULTILINE | re.DOTALL)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), (page.name, target)
            if anchor:
                assert anchor in _anchors(linked), (page.name, target, sorted(_anchors(linked)))
            checked += 1
    assert checked >= 30


def test_docs_pages_named_by_the_help_exist():
    named = {m for path in (REPO / "pulse_cli").rglob("*.py")
             for m in re.findall(r"docs/[\w-]+\.md", path.read_text("utf-8"))}
    assert {"docs/usage.md", "docs/output-contract.md"} <= named
    assert all((REPO / page).is_file() for page in named), named
