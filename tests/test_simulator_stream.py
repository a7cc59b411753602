"""The simulated worlds stay byte-identical: documented results (docs/results.md, docs/data.md) depend on them.

The digests below were computed with the simulator before its per-session ranking was restricted to the users shown
something (6 December 2026). Any change to the random draws (their order, their shapes) or to how a slate is picked
changes them. If a change is meant to alter the worlds, the documented figures must be re-measured with it.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from conrec.data.config import SimulatorConfig
from conrec.data.simulator import simulate

WORLDS: dict[str, tuple[dict[str, Any], str]] = {
    "default": ({}, "82fcda5226e8f1ae"),
    "one_session": ({"n_users": 30, "n_items": 120, "days": 10, "sessions_per_day": 1, "seed": 1}, "15c6090c20e0b1b0"),
    "seven_sessions": ({"n_users": 30, "n_items": 120, "days": 10, "sessions_per_day": 7, "seed": 2}, "8cb095f79ba2ed2a"),
    # most users are shown nothing in a session
    "many_sessions": ({"n_users": 25, "n_items": 100, "days": 6, "sessions_per_day": 96, "seed": 3}, "899a8b1026b58aa5"),
    "sparse": (
        {"n_users": 60, "n_items": 150, "days": 20, "events_per_user_per_day": 0.3, "sessions_per_day": 4, "seed": 4},
        "662bf6a08be94a98",
    ),
    # users run out of items they have not reacted to: the slate size is capped by it
    "exhausted": (
        {"n_users": 4, "n_items": 15, "days": 6, "events_per_user_per_day": 40, "sessions_per_day": 5,
         "dislike_prob_background": 0.3, "dislike_prob_on_facet": 0.4, "seed": 5},
        "b8dcd2995204c58f",
    ),
    # suppressed weights underflow to 0 in float32: ties broken by the reacted-items rule
    "hard_suppression": (
        {"n_users": 20, "n_items": 80, "days": 12, "suppression_penalty": 300.0, "dislike_prob_background": 0.05, "seed": 6},
        "6fd9c9eb9d3b2498",
    ),
}  # fmt: skip


def world_digest(cfg: SimulatorConfig) -> str:
    """sha256 (16 hex digits) of the exposures, events and true facets, column by column, platform-independent."""
    res = simulate(cfg)
    h = hashlib.sha256()
    for frame in (res.exposures, res.events, res.user_facets):
        for name in frame.columns:
            col = frame[name]
            if col.dtype.is_numeric():
                values = col.to_numpy()
                h.update(values.astype(values.dtype.newbyteorder("<")).tobytes())
            else:
                h.update("\n".join(col.to_list()).encode())
            h.update(b"|")
    return h.hexdigest()[:16]


@pytest.mark.parametrize("name", list(WORLDS))
def test_simulated_world_is_unchanged(name: str) -> None:
    setting, expected = WORLDS[name]
    assert world_digest(SimulatorConfig(**setting)) == expected


def test_digest_sees_a_change() -> None:
    """The digest is not blind to the world: another seed changes it."""
    cfg = SimulatorConfig(n_users=10, n_items=40, days=4)
    assert world_digest(cfg) != world_digest(cfg.model_copy(update={"seed": 1}))
