"""The simulator's size settings are refused at config load when they could only end in a late failure."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from conrec.data.config import SimulatorConfig


@pytest.mark.parametrize(
    ("setting", "name"),
    [
        # past the year 9999: minutes of simulation, then a timestamp error advising the table sources' ts_unit
        ({"days": 2_950_000}, "days"),
        ({"days": 36_501}, "days"),
        # days x sessions_per_day steps, each dense over users x items
        ({"sessions_per_day": 100_000_000}, "sessions_per_day"),
        ({"sessions_per_day": 86_401}, "sessions_per_day"),
    ],
)
def test_days_and_sessions_are_bounded(setting: dict[str, int], name: str) -> None:
    with pytest.raises(ValidationError, match=rf"{name}\n.*less than or equal"):
        SimulatorConfig(**setting)


def test_the_longest_and_finest_world_is_accepted() -> None:
    cfg = SimulatorConfig(days=36_500, sessions_per_day=86_400)
    assert (cfg.days, cfg.sessions_per_day) == (36_500, 86_400)


def test_a_huge_catalogue_is_refused_even_with_few_users() -> None:
    # 2 x 1e8 is 5% of the pair cap, but the items alone (~650 B each as generated strings) would need ~70 GB
    with pytest.raises(ValidationError, match=r"n_items = 100,000,000 with 2 users: the simulator needs about 84 GB"):
        SimulatorConfig(n_users=2, n_items=100_000_000)
    with pytest.raises(ValidationError, match=r"n_items = 12,000,000 with 10 users: .*about 16.8 GB"):
        SimulatorConfig(n_users=10, n_items=12_000_000)  # 1.2e8 pairs, under the pair cap


@pytest.mark.parametrize(
    "size",
    [
        {"n_users": 100_000, "n_items": 2_000},  # the pair cap message's own example
        {"n_users": 2, "n_items": 5_000_000},  # measured: 57 s and 3.3 GB
        {"n_users": 600, "n_items": 2_000},  # the largest documented world (docs/results.md)
    ],
)
def test_worlds_that_fit_stay_accepted(size: dict[str, int]) -> None:
    assert SimulatorConfig(**size).n_items == size["n_items"]


def test_mostly_dislikes_advice_names_the_simulator_settings() -> None:
    """A simulated world has no rating mapping: the advice must name data.simulator's settings, not the table ones."""
    from conrec.data.stage import dislike_share_warning

    sim = dislike_share_warning({"dislike_share": 1.0, "source": "simulator"})
    assert sim is not None and sim.startswith("100% of the events are dislikes")
    assert "dislike_prob_on_facet" in sim and "dislike_facets_per_user" in sim
    assert "dislike_max_rating" not in sim and "conrec init" not in sim and "rating_range" not in sim
    table = dislike_share_warning({"dislike_share": 0.8, "source": "table"})
    assert table is not None and "dislike_max_rating" in table
