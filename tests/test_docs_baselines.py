"""The docs' count and list of baselines follow the registry (conrec.eval.baselines.REGISTRY).

Found by a contributor probe (7 December 2026): after a new default baseline the config evaluated 9, the README
still said "evaluates against 8 baselines" and docs/evaluation.md did not list it, and every test passed. Each is
read from one marked place: the README's "evaluates against N baselines", the evaluation page's table between
``<!-- baselines:begin -->`` and ``<!-- baselines:end -->`` (one row per baseline, its name first).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conrec.eval.baselines import REGISTRY
from conrec.eval.config import DEFAULT_BASELINES

ROOT = Path(__file__).resolve().parents[1]
README_COUNT = re.compile(r"evaluates against (\d+) baselines")


def readme_count(text: str) -> int:
    """The N of the README's one "evaluates against N baselines" (the demo on one's own data: the default list)."""
    found = README_COUNT.findall(text)
    assert len(found) == 1, f"README.md must say 'evaluates against N baselines' once (found {len(found)})"
    return int(found[0])


def page_baselines(text: str) -> list[str]:
    """The names in the first column of docs/evaluation.md's table between the baselines markers, in order."""
    block = re.search(r"<!-- baselines:begin -->\n(.*?)\n<!-- baselines:end -->", text, re.S)
    assert block is not None, "docs/evaluation.md lost its <!-- baselines:begin --> ... <!-- baselines:end --> table"
    rows = [line for line in block.group(1).splitlines()[2:] if line.strip()]  # after the header and its rule
    names = [re.match(r"\| `([a-z_0-9]+)` \|", row) for row in rows]
    assert all(names), f"each row of the baselines table starts with | `<name>` |: {[r for r, m in zip(rows, names) if not m]}"
    return [m.group(1) for m in names if m]


def test_the_readme_counts_the_default_baselines() -> None:
    count = readme_count((ROOT / "README.md").read_text(encoding="utf-8"))
    assert count == len(DEFAULT_BASELINES), (
        f"README.md says 'evaluates against {count} baselines' but eval.config.DEFAULT_BASELINES has {len(DEFAULT_BASELINES)} "
        f"{list(DEFAULT_BASELINES)}: change the number"
    )


def test_the_evaluation_page_lists_every_registered_baseline_in_order() -> None:
    listed = page_baselines((ROOT / "docs" / "evaluation.md").read_text(encoding="utf-8"))
    assert listed == list(REGISTRY), (
        f"docs/evaluation.md's baselines table lists {listed}, the registry has {list(REGISTRY)}: give each baseline a row, "
        "in the registry's order (docs/development.md, 'A baseline')"
    )


def test_a_drifted_count_or_list_is_caught() -> None:
    """The parsers find what a stale page says (so the tests above can fail)."""
    assert readme_count("conrec demo  # trains, evaluates against 8 baselines, prints") == 8
    with pytest.raises(AssertionError, match="once"):
        readme_count("evaluates against 8 baselines; evaluates against 9 baselines")
    table = "<!-- baselines:begin -->\n| baseline | what |\n|---|---|\n| `popularity` | counts |\n| `ease` | EASE |\n<!-- baselines:end -->"
    assert page_baselines(table) == ["popularity", "ease"]
    with pytest.raises(AssertionError, match="starts with"):
        page_baselines(table.replace("| `ease` |", "| ease |"))
