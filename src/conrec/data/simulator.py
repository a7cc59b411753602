"""A seeded simulator of feed recommendation with sparse explicit dislikes and exposure bias.

What it reproduces, and why each piece is there (these are the properties that make negative
recommendation hard, and that the CoNRec design answers):

* **Items whose text means something.** Every item has a category (e.g. *Thriller*, *Baking Show*)
  and two attributes, a tone (*Gritty*, *Cozy*...) and a setting (*Space*, *Kitchen*...); its title is
  generated from them ("Gritty Space Thriller", "Cozy Kitchen Baking Show") and its text describes
  them, so a text encoder can place similar items close together and semantic IDs carry taste.
* **Dislikes have causes.** Each user has a few latent *dislike facets*: a category, a tone or a
  setting they cannot stand. Exposed to an item on one of their facets, they press "not
  interested" with probability ``dislike_prob_on_facet``; any other item draws a dislike only
  rarely (``dislike_prob_background``, noise). They never like an item on their facets.
* **Broad positive interests.** Each user also has smooth preferences over categories, tones and
  settings; an exposed item off their facets is liked with a probability that rises with that
  interest. Neutral exposures (no feedback) are dropped, as every loader drops them.
* **Negatives are sparse.** With the defaults only a few % of recorded feedback is a dislike, so
  negative histories are short next to positive ones.
* **Exposure bias after a dislike.** The simulated recommender ranks items by popularity plus the
  user's interest (a slate per session, ``sessions_per_day`` a day, without re-showing items the
  user already reacted to), and after a dislike it *suppresses every item close to the disliked
  one* (sharing its category, tone or setting) for ``suppression_days``. So the facet that caused
  the dislike disappears from the feed for a while, and the user's *next* negative comes from
  whatever facet is still being shown: it reflects exposure order, not the whole of the user's
  negative taste. A multi-day window of future negatives covers several facets; the next negative
  alone covers one.

Ground truth is returned with the data (:class:`SimulationResult`): each user's true dislike facets,
the items on them, and each (user, item) pair's true dislike probability, so tests and reports can
check that a metric or a model rewards true taste rather than exposure order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from conrec.data.config import SIMULATOR_FACETS, SimulatorConfig
from conrec.data.samples import DAY
from conrec.data.schema import DISLIKE, POSITIVE, validate_events, validate_items
from conrec.errors import DataValidationError

CATEGORIES = (
    "Thriller", "Baking Show", "Comedy", "Documentary", "Horror", "Romance", "Cartoon", "Sports Recap",
    "Reality Show", "Drama", "Science Explainer", "Music Video", "Travel Vlog", "Fashion Haul",
    "News Bulletin", "Gaming Stream", "Fitness Class", "Mystery", "Western", "Anime", "Talk Show",
    "Prank Video", "Car Review", "Cooking Tutorial",
)  # fmt: skip
TONES = ("Gritty", "Cozy", "Dark", "Whimsical", "Upbeat", "Melancholic", "Loud", "Wholesome")
SETTINGS = ("Space", "Kitchen", "Medieval", "Urban", "Ocean", "Jungle", "Office", "Desert", "Arctic", "Suburban")
_SETTING_PHRASE = {
    "Space": "in outer space", "Kitchen": "in a kitchen", "Medieval": "in medieval times", "Urban": "in a big city",
    "Ocean": "at sea", "Jungle": "in the jungle", "Office": "in an office", "Desert": "in the desert",
    "Arctic": "in the Arctic", "Suburban": "in the suburbs",
}  # fmt: skip
AXES = SIMULATOR_FACETS
_FACET_AXIS_PROBS = (0.4, 0.3, 0.3)  # dislike facets: a whole category is the most common aversion
START_TS = 1_704_067_200  # 2024-01-01 00:00 UTC


@dataclass(frozen=True)
class SimulationResult:
    """Simulated data plus the ground truth behind it.

    events/items: canonical tables (items also carry ``tone`` and ``setting``).
    user_facets: ``user_id, axis, value`` — each user's true dislike facets.
    exposures: every exposure, ``user_id, item_id, ts, outcome`` (-1 dislike, +1 positive, 0 none),
    so exposure bias can be inspected directly.
    """

    events: pl.DataFrame
    items: pl.DataFrame
    user_facets: pl.DataFrame
    exposures: pl.DataFrame
    config: SimulatorConfig

    def facet_items(self) -> pl.DataFrame:
        """``user_id, item_id`` for every item on one of the user's dislike facets (their true negative taste)."""
        return on_facet_pairs(self.user_facets, self.items)

    def dislike_probability(self, user_ids: list[str] | pl.Series, item_ids: list[str] | pl.Series) -> np.ndarray:
        """True P(dislike | exposed) for aligned (user, item) pairs: the quantity a perfect model would rank by."""
        pairs = pl.DataFrame({"user_id": pl.Series(user_ids, dtype=pl.String), "item_id": pl.Series(item_ids, dtype=pl.String)})
        on = self.facet_items().with_columns(on_facet=pl.lit(True))
        joined = pairs.join(on, on=["user_id", "item_id"], how="left", maintain_order="left")
        return np.where(
            joined["on_facet"].fill_null(False).to_numpy(),
            self.config.dislike_prob_on_facet,
            self.config.dislike_prob_background,
        )


def on_facet_pairs(user_facets: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
    """``user_id, item_id`` (strings, sorted, unique) of every item whose ``axis`` column holds one of the
    user's ``(axis, value)`` dislike facets (pure). An axis that is not a column of ``items`` matches
    nothing, so the written ``data/user_facets.parquet`` can be checked against any items table."""
    axes = sorted(a for a in user_facets["axis"].unique().to_list() if a in items.columns)
    if not axes:
        return pl.DataFrame(schema={"user_id": pl.String, "item_id": pl.String})
    item_attrs = items.select(pl.col("item_id").cast(pl.String), *(pl.col(a).cast(pl.String) for a in axes)).unpivot(
        index="item_id", variable_name="axis", value_name="value"
    )
    facets = user_facets.select(pl.col("user_id").cast(pl.String), pl.col("axis").cast(pl.String), pl.col("value").cast(pl.String))
    return facets.join(item_attrs, on=["axis", "value"]).select("user_id", "item_id").unique().sort("user_id", "item_id")


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def _make_items(cfg: SimulatorConfig, rng: np.random.Generator) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """Items with attributes, generated titles/text and a long-tailed popularity."""
    n = cfg.n_items
    cats = CATEGORIES[: cfg.n_categories]
    cat = rng.choice(len(cats), size=n, p=rng.dirichlet(np.full(len(cats), 3.0)))
    tone = rng.integers(len(TONES), size=n)
    setting = rng.integers(len(SETTINGS), size=n)
    base = [f"{TONES[t]} {SETTINGS[s]} {cats[c]}" for c, t, s in zip(cat, tone, setting)]
    seen: dict[str, int] = {}
    titles = []
    for b in base:  # same attributes -> a numbered sequel, so titles stay distinct
        seen[b] = seen.get(b, 0) + 1
        titles.append(b if seen[b] == 1 else f"{b} {seen[b]}")
    text = [
        f"{cats[c]} with {_article(TONES[t])} {TONES[t].lower()} tone, set {_SETTING_PHRASE[SETTINGS[s]]}." for c, t, s in zip(cat, tone, setting)
    ]
    popularity = rng.lognormal(0.0, 1.0, size=n)
    items = pl.DataFrame(
        {
            "item_id": [f"i{i:05d}" for i in range(n)],
            "title": titles,
            "text": text,
            "category": [cats[c] for c in cat],
            "tone": [TONES[t] for t in tone],
            "setting": [SETTINGS[s] for s in setting],
            "popularity": popularity,
        }
    )
    attrs = np.stack([cat, tone, setting])  # (3, n_items)
    return items, attrs, popularity


def _make_users(cfg: SimulatorConfig, rng: np.random.Generator, attrs: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int]]]:
    """Dislike facets (as an on-facet mask over items) and interest scores (users x items)."""
    sizes = (cfg.n_categories, len(TONES), len(SETTINGS))
    n_u, n_i = cfg.n_users, cfg.n_items
    on_facet = np.zeros((n_u, n_i), dtype=bool)
    facets: list[tuple[int, int, int]] = []
    interest = np.zeros((n_u, n_i))
    weights = (1.0, 0.5, 0.5)
    prefs = [rng.dirichlet(np.full(k, 0.8), size=n_u) * k for k in sizes]  # mean 1 per value
    for u in range(n_u):
        chosen: set[tuple[int, int]] = set()
        while len(chosen) < cfg.dislike_facets_per_user:
            axis = int(rng.choice(3, p=_FACET_AXIS_PROBS))
            chosen.add((axis, int(rng.integers(sizes[axis]))))
        for axis, value in sorted(chosen):
            facets.append((u, axis, value))
            on_facet[u] |= attrs[axis] == value
            prefs[axis][u, value] *= 0.3  # people do not seek out what they dislike
    for axis in range(3):
        interest += weights[axis] * np.log(prefs[axis][:, attrs[axis]] + 1e-3)
    return on_facet, interest, facets


def simulate(cfg: SimulatorConfig | None = None, progress: Callable[[int, int], None] | None = None) -> SimulationResult:
    """Run the simulation (deterministic for a given config, ``seed`` included).

    ``progress(done_sessions, total_sessions)`` is called after each session, for progress bars.
    """
    cfg = cfg or SimulatorConfig()
    rng = np.random.default_rng(cfg.seed)
    items, attrs, popularity = _make_items(cfg, rng)
    on_facet, interest, facets = _make_users(cfg, rng, attrs)
    n_u, n_i = cfg.n_users, cfg.n_items

    z = (interest - interest.mean(axis=1, keepdims=True)) / (interest.std(axis=1, keepdims=True) + 1e-9)
    p_pos = cfg.positive_prob_min + (cfg.positive_prob_max - cfg.positive_prob_min) / (1.0 + np.exp(-1.5 * z))
    p_pos[on_facet] = 0.0
    p_dis = np.where(on_facet, cfg.dislike_prob_on_facet, cfg.dislike_prob_background)
    base_logit = cfg.popularity_weight * np.log(popularity)[None, :] + cfg.interest_weight * interest
    base_weight = np.exp(base_logit - base_logit.max(axis=1, keepdims=True)).astype(np.float32)
    suppressed_factor = np.float32(np.exp(-cfg.suppression_penalty))

    sizes = (cfg.n_categories, len(TONES), len(SETTINGS))
    suppressed_until = [np.full((n_u, k), -1, dtype=np.int64) for k in sizes]
    reacted = np.zeros((n_u, n_i), dtype=bool)
    n_reacted = np.zeros(n_u, dtype=np.int64)  # reacted.sum(axis=1), kept up to date instead of recounted every step
    lam = cfg.events_per_user_per_day / cfg.sessions_per_day
    session_len = DAY // cfg.sessions_per_day
    suppress_s = int(round(cfg.suppression_days * DAY))
    out_u, out_i, out_t, out_o = [], [], [], []
    total = cfg.days * cfg.sessions_per_day
    for step in range(total):
        day, session = divmod(step, cfg.sessions_per_day)
        t0 = START_TS + day * DAY + session * session_len
        # never more than the items a user has not reacted to: the top-k below would take reacted (weight 0) ones
        counts = np.minimum(rng.poisson(lam, size=n_u), n_i - n_reacted)
        k = int(counts.max())
        if k > 0:
            # The ranking below is per user, so it is done only for the users shown something this session (at
            # 96 sessions a day ~86% of them are shown nothing): the same events, at a fraction of the work. The
            # random draws are not: the exponentials are still drawn for every user x item cell, so the generator's
            # stream, and every documented simulated world, stays exactly as it was.
            active = np.flatnonzero(counts)
            suppressed = np.zeros((active.size, n_i), dtype=bool)
            for axis in range(3):  # a bool per (user, facet value) first: gathering int64 over every item cost 3x more
                suppressed |= (suppressed_until[axis][active] > t0)[:, attrs[axis]]
            noise = rng.standard_exponential(size=(n_u, n_i), dtype=np.float32)[active]
            weight = np.where(suppressed, base_weight[active] * suppressed_factor, base_weight[active])
            # Top-k of weight / Exp(1) = sampling k items without replacement proportionally to weight
            # (the exponential form of the Gumbel top-k trick; no logs needed).
            key = weight / (noise + np.float32(1e-12))
            # below every key of an item not reacted to, even one whose weight underflowed to 0 in float32
            # (a suppression_penalty over ~100, extreme weights): at 0 they tied, and reacted items were shown again
            key[reacted[active]] = -1.0
            top = np.argpartition(-key, k - 1, axis=1)[:, :k]
            top = np.take_along_axis(top, np.argsort(-np.take_along_axis(key, top, axis=1), axis=1), axis=1)
            slot_ok = np.arange(k)[None, :] < counts[active][:, None]
            u_idx = np.broadcast_to(active[:, None], top.shape)[slot_ok]
            i_idx = top[slot_ok]
            slot = np.broadcast_to(np.arange(k)[None, :], top.shape)[slot_ok]
            gap = max(0, min(90, (session_len - 660) // k))  # 90 s per item, closer for a slate too long for its session
            ts = t0 + rng.integers(0, 600, size=n_u)[u_idx] + slot * gap + rng.integers(0, 60, size=slot.shape)
            r = rng.random(i_idx.shape)
            pd_, pp = p_dis[u_idx, i_idx], p_pos[u_idx, i_idx]
            outcome = np.where(r < pd_, DISLIKE, np.where(r < pd_ + pp, POSITIVE, 0)).astype(np.int8)
            reacted[u_idx[outcome != 0], i_idx[outcome != 0]] = True  # distinct items per user: each pair once
            n_reacted += np.bincount(u_idx[outcome != 0], minlength=n_u)
            dis = outcome == DISLIKE
            for axis in range(3):  # the recommender hides everything close to a disliked item
                np.maximum.at(suppressed_until[axis], (u_idx[dis], attrs[axis][i_idx[dis]]), ts[dis] + suppress_s)
            out_u.append(u_idx)
            out_i.append(i_idx)
            out_t.append(ts)
            out_o.append(outcome)
        if progress is not None:
            progress(step + 1, total)

    if not out_u:
        raise DataValidationError(
            f"the simulator showed no item in {cfg.days} days: raise data.simulator.events_per_user_per_day "
            f"(is {cfg.events_per_user_per_day:g}) or days"
        )
    user_names = np.array([f"u{u:04d}" for u in range(n_u)])
    item_names = items["item_id"].to_numpy()
    exposures = pl.DataFrame(
        {
            "user_id": user_names[np.concatenate(out_u)],
            "item_id": item_names[np.concatenate(out_i)],
            "ts": np.concatenate(out_t).astype(np.int64),
            "outcome": np.concatenate(out_o),
        }
    ).sort(["user_id", "ts"], maintain_order=True)
    events = exposures.filter(pl.col("outcome") != 0).rename({"outcome": "feedback"})
    if events.height == 0:  # it said "simulator events: no events", naming no setting
        raise DataValidationError(
            f"the simulator's users reacted to none of the {exposures.height:,} items shown: raise data.simulator's "
            "dislike_prob_on_facet, dislike_prob_background or positive_prob_min/max"
        )
    items = validate_items(items, source="simulator items")
    events = validate_events(events, items, source="simulator events")
    axis_names = [AXES[a] for _, a, _ in facets]
    value_names = [(CATEGORIES[: cfg.n_categories], TONES, SETTINGS)[a][v] for _, a, v in facets]
    user_facets = pl.DataFrame({"user_id": [user_names[u] for u, _, _ in facets], "axis": axis_names, "value": value_names})
    return SimulationResult(events=events, items=items, user_facets=user_facets, exposures=exposures, config=cfg)
