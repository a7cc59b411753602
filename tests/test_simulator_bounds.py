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
