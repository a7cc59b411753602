"""Print a command the README tells a newcomer to type: ``install``, ``lint`` or ``test``.

Why: CI must prove what the README says, so ``.ci/run`` executes these lines verbatim instead of
keeping its own copy that could drift. The install command is the first ``pip install`` line of
the README's first ``bash`` block (its trailing ``# comment`` dropped); the test and lint commands
are the first backquoted command on the README line that starts with ``Tests:`` / ``Lint:``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def install_command(text: str) -> str:
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    if block is None:
        raise SystemExit("README.md has no ```bash block")
    for line in block.group(1).splitlines():
        if line.lstrip().startswith("pip install"):
            return line.split("#", 1)[0].strip()
    raise SystemExit("README.md: the first ```bash block has no `pip install` line")


def labelled_command(text: str, label: str) -> str:
    """The first backquoted command on the README line that starts with ``label``."""
    for line in text.splitlines():
        if line.startswith(label):
            found = re.search(r"`([^`]+)`", line)
            if found:
                return found.group(1).strip()
    raise SystemExit(f"README.md has no `{label} `<command>`` line")


def test_command(text: str) -> str:
    return labelled_command(text, "Tests:")


def lint_command(text: str) -> str:
    return labelled_command(text, "Lint:")


def main(argv: list[str]) -> int:
    what = argv[1] if len(argv) > 1 else ""
    text = (Path(argv[2]) if len(argv) > 2 else README).read_text()
    if what == "install":
        print(install_command(text))
    elif what == "lint":
        print(lint_command(text))
    elif what == "test":
        print(test_command(text))
    else:
        raise SystemExit("usage: readme_commands.py install|lint|test [README.md]")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
