"""Every `conrec <command> --flag` that README.md and docs/*.md show is a flag that command takes.

Why: docs/pipeline.md told users to run `conrec grpo --force`, which Typer refuses (only `conrec demo` and
`conrec init` take `--force`; `sft` and `grpo` take `--resume/--no-resume`), and nothing read the docs' commands."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from conrec.cli import app

ROOT = Path(__file__).resolve().parent.parent
CODE = re.compile(r"```[^\n]*\n(.*?)```|`([^`\n]+)`", re.S)  # fenced blocks and inline spans: where commands are shown
# `conrec <word>` and its arguments up to the end of the shell command (a pipe, `&&`, `;`, a redirect, a comment)
INVOCATION = re.compile(r"\bconrec[ \t]+([a-z][a-z-]*)((?:[ \t]+(?:\\\n\s*)?[^\s|;&<>#`]+)*)")


def command_options() -> dict[str, set[str]]:
    """Each CLI command (hidden aliases included) and the options it takes, ``--help`` and negated forms included."""
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    assert "grpo" in commands and "demo" in commands
    return {name: {"--help"} | {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} for name, cmd in commands.items()}


def shown_flags(text: str) -> list[tuple[str, str, str]]:
    """(command, flag, the invocation) for every flag given to a ``conrec`` command in ``text``'s code (pure); a word
    after ``conrec`` that is no command (prose in a code span: "the conrec checkout") is left to the caller."""
    found = []
    for block in CODE.finditer(text):
        for call in INVOCATION.finditer(block.group(1) or block.group(2)):
            args = call.group(2).replace("\\\n", " ").split()
            found += [(call.group(1), a.split("=")[0], call.group(0).strip()) for a in args if a.startswith("-")]
    return found


def test_shown_flags_reads_inline_and_fenced_commands() -> None:
    text = "run `conrec grpo --force` or\n```bash\nconrec sft -c my.yaml \\\n  --no-resume | tee log --x\n```\n"
    assert [(c, f) for c, f, _ in shown_flags(text)] == [("grpo", "--force"), ("sft", "-c"), ("sft", "--no-resume")]


def test_every_flag_the_docs_show_exists_on_its_command() -> None:
    options = command_options()
    shown = [
        (path.relative_to(ROOT), cmd, flag, call)
        for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
        for cmd, flag, call in shown_flags(path.read_text())
        if cmd in options
    ]
    assert len(shown) > 50  # the docs show many: a parser that finds none would pass
    unknown = [f"{path}: `{call}`: {flag}" for path, cmd, flag, call in shown if flag not in options[cmd]]
    assert not unknown, "flags the command does not take:\n" + "\n".join(unknown)
