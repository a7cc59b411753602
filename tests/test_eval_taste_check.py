"""The taste check: the share of a top-K on each user's true (simulated) dislike facets."""

from __future__ import annotations

import math

import polars as pl
import pytest

from conrec.data.config import SimulatorConfig
from conrec.data.simulator import simulate
from conrec.eval.taste_check import facet_items, future_on_facet_share, on_facet_share, taste_section

ITEMS = pl.DataFrame(
    {
        "item_id": ["a", "b", "c", "d"],
        "category": ["Horror", "Comedy", "Horror", "Drama"],
        "tone": ["Dark", "Dark", "Cozy", "Cozy"],
        "setting": ["Space", "Ocean", "Ocean", "Space"],
    }
)
FACETS = pl.DataFrame({"user_id": ["u1", "u1", "u2", "u3"], "axis": ["category", "setting", "tone", "mood"], "value": ["Horror", "Space", "Cozy", "Sad"]})


def test_facet_items_match_each_axis_column() -> None:
    on = facet_items(FACETS, ITEMS)
    assert on == {"u1": {"a", "c", "d"}, "u2": {"c", "d"}}  # u3's axis is no item column: nothing
    assert facet_items(FACETS.filter(pl.col("axis") == "mood"), ITEMS) == {}  # no axis is an item column


def test_facet_items_agree_with_the_simulators_own_ground_truth() -> None:
    sim = simulate(SimulatorConfig(n_users=20, n_items=60, n_categories=4, days=5))
    # built by hand, not by the shared on_facet_pairs (comparing it with itself could not fail)
    expected: dict[str, set[str]] = {}
    items = sim.items.to_dicts()
    for facet in sim.user_facets.iter_rows(named=True):
        for item in items:
            if str(item[facet["axis"]]) == str(facet["value"]):
                expected.setdefault(str(facet["user_id"]), set()).add(str(item["item_id"]))
    assert facet_items(sim.user_facets, sim.items) == expected and len(expected) == 20
    # and they are the facets the simulation used: nobody likes an item on their facets, most dislikes are on them
    on = {(u, i) for u, items_ in expected.items() for i in items_}
    reactions = [((u, i) in on, fb) for u, i, fb in sim.events.select("user_id", "item_id", "feedback").iter_rows()]
    assert not any(hit for hit, fb in reactions if fb == 1)
    dislikes = [hit for hit, fb in reactions if fb == -1]
    assert len(dislikes) > 20 and sum(dislikes) / len(dislikes) > 0.5


def test_on_facet_share_is_the_mean_share_of_the_top_k() -> None:
    on = facet_items(FACETS, ITEMS)
    # u1: top-2 (a, b) -> 1/2; u2: top-2 (c, d) -> 2/2; u3: no facets -> 0; an empty ranking counts 0
    share = on_facet_share([["a", "b", "c"], ["c", "d", "a"], ["a", "b"], []], ["u1", "u2", "u3", "u1"], on, k=2)
    assert share == pytest.approx((0.5 + 1.0 + 0.0 + 0.0) / 4)
    assert on_facet_share([["b", "a"]], ["u1"], on, k=1) == 0.0
    assert math.isnan(on_facet_share([], [], on, k=5))
    with pytest.raises(ValueError, match="2 rankings but 1 users"):
        on_facet_share([["a"], ["b"]], ["u1"], on, k=1)


def test_future_share_and_section() -> None:
    on = facet_items(FACETS, ITEMS)
    samples = pl.DataFrame({"user_id": ["u1", "u2"], "future_negs": [["a", "b"], ["c"]]})
    assert future_on_facet_share(samples, on) == pytest.approx(2 / 3)
    text = taste_section({"popularity": 0.25, "sft": 0.5}, 20, 2 / 3)
    assert "## Taste check" in text and "| sft | 0.500 |" in text and "0.667 are on them" in text
