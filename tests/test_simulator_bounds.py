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
