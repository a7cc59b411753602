"""GRPO rewards for negative recommendation: the multi-day future-negative set, with partial credit.

Why a *set* target: once a user dislikes something the platform stops showing similar items, so the
single next negative mostly reflects exposure order; the items disliked over the next N days are a
much better picture of negative interest (CoNRec). A generated item earns

* ``hit``    1 if it is in the user's N-day future-negative set;
* ``collab`` max co-dislike similarity to any item of that set, in [0, 1]: item-item cosine of the users who
  disliked both, fitted (:mod:`conrec.llm.training.collab`) on the run's training events, the baselines' fit events
  (before the cut-off of the ``data.split.train_until`` split), so a train point's own user counts too, with that
  user's dislikes after the point and its future window included (no later event enters: no valid/test label);
* ``prefix`` longest SID prefix shared with any item of that set, divided by the number of levels;
* ``liked``  -1 if the user liked it (in the history positives), else 0 (a penalty component);
* ``next``   1 if it is the next negative item (the conventional objective, for the ablation).
* ``sim``    (similarity mode, CoNRec's reward) max cosine similarity of the item's vector to the
  *target set* = the future-negative set plus each member's top Swing co-negatives (items disliked
  together with it in the same training events as ``collab``, :mod:`conrec.swing`), in [0, 1];
* ``pos_sim`` -(max cosine similarity to the items the user gives *positive* feedback to in the same
  future window), in [-1, 0]: CoNRec's future-positive penalty, so a generated item that looks like
  something the user is about to enjoy is pushed away even when it resembles a disliked one.

Why a similarity reward (CoNRec): a hit reward is 0 for almost every item of a group, so most
groups have zero advantage and learning is slow (the paper found 1/0.1/0.01 hit-by-level credit
converged slowly); cosine similarity on the item vectors (codebook-reconstructed, see
:mod:`conrec.llm.training.item_vectors`) grades every generated item. Cosines below 0 count as 0 (no
similarity), so an empty set gives 0 and an exact hit gets the maximum 1.


Partial credits are maximal for an exact hit (an item shares its whole SID with itself and is
maximally similar to itself), so the combined reward is monotone: hit >= near miss >= far miss.
An empty future set gives 0 for hit/collab/prefix (no signal, not a penalty).

Items already in the user's history (``seen_items``) earn no positive credit when
``exclude_seen`` is on (the GRPO stage passes ``decode.exclude_history``): evaluation drops them
from the ranking, so rewarding the policy for repeating a disliked history item (which shares SID
prefixes and co-dislike neighbours with the future set) would teach it to waste slots. The liked
penalty still applies to them.

The combined reward is ``sum_c weight_c * component_c`` with weights from
:class:`conrec.llm.config.RewardConfig`. TRL gets one callable per component plus the weights
(``GRPOConfig.reward_weights``), so every component's mean reaches the trainer logs
(``rewards/<name>/mean``). Targets arrive as dataset columns passed by TRL as keyword arguments
(``future_negs``, ``next_neg``, ``liked_items``, ``seen_items``, ``future_pos``, ``sim_targets``); nothing is
ever looked up by prompt text. :data:`REWARD_MODES`: ``future_collab`` (hit/collab/prefix/liked/next weights),
``similarity`` (``w_sim`` x sim + ``gamma`` x pos_sim) and ``next_neg`` (ablation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from conrec.llm.config import RewardConfig
from conrec.llm.training.collab import CoDislike, max_over_sets
from conrec.sid.tokens import parse_sid
from conrec.swing import Swing

RewardMode = Literal["future_collab", "similarity", "next_neg"]
REWARD_MODES: tuple[str, ...] = ("future_collab", "similarity", "next_neg")


@dataclass
class ItemSimilarity:
    """What the similarity reward needs: unit item vectors (rows follow ``item_ids``) and, optionally,
    Swing co-negatives to extend a target set with (``co_negatives`` per member)."""

    item_ids: Sequence[str]
    vectors: np.ndarray
    swing: Swing | None = None
    co_negatives: int = 0
    _index: dict[str, int] = field(init=False, repr=False)
    _targets: dict[tuple[str, ...], list[str]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.item_ids) != len(self.vectors):
            raise ValueError(f"{len(self.item_ids)} item ids but {len(self.vectors)} vectors")
        self._index = {str(i): k for k, i in enumerate(self.item_ids)}
        self._targets = {}

    def target_set(self, items: Sequence[str]) -> list[str]:
        """``items`` plus their top Swing co-negatives (cached: a group's G completions share one set)."""
        key = tuple(items)
        if key not in self._targets:
            extra = self.swing.co_negatives(key, self.co_negatives) if self.swing is not None and self.co_negatives else []
            self._targets[key] = list(key) + extra
        return self._targets[key]

    def max_cosine(self, items: Sequence[str | None], item_sets: Sequence[Sequence[str]]) -> np.ndarray:
        """Per row, max(0, max cosine of the item to any member of its set); 0 for empty sets / unknown ids.

        Vectorised (:func:`conrec.llm.training.collab.max_over_sets`): one gather of vector pairs, a per-row maximum.
        """
        v = self.vectors
        return max_over_sets(items, item_sets, self._index, lambda a, b: np.minimum(np.einsum("ij,ij->i", v[a], v[b]), 1.0))


# --------------------------------------------------------------------------- pure components
def hit_reward(items: Sequence[str | None], future_sets: Sequence[Sequence[str]]) -> np.ndarray:
    """1.0 where the generated item is in its row's future-negative set."""
    _check_len(items, future_sets, "future sets")
    return np.array([float(i is not None and i in set(s)) for i, s in zip(items, future_sets)], dtype=np.float32)


def next_neg_reward(items: Sequence[str | None], next_negs: Sequence[str | None]) -> np.ndarray:
    """1.0 where the generated item is exactly the next negative item."""
    _check_len(items, next_negs, "next negatives")
    return np.array([float(i is not None and i == n) for i, n in zip(items, next_negs)], dtype=np.float32)


def liked_penalty(items: Sequence[str | None], liked_sets: Sequence[Sequence[str]]) -> np.ndarray:
    """-1.0 where the generated item is one the user liked: recommending it as a dislike is a clear error."""
    _check_len(items, liked_sets, "liked sets")
    return np.array([-float(i is not None and i in set(s)) for i, s in zip(items, liked_sets)], dtype=np.float32)


def collab_reward(
    items: Sequence[str | None], future_sets: Sequence[Sequence[str]], codislike: CoDislike
) -> np.ndarray:
    """Max co-dislike similarity of each generated item to its future set (0 if the set is empty)."""
    _check_len(items, future_sets, "future sets")
    return codislike.similarity_to_sets(items, future_sets)


def prefix_reward(
    items: Sequence[str | None],
    future_sets: Sequence[Sequence[str]],
    codes_of: Mapping[str, Sequence[int]],
) -> np.ndarray:
    """Longest SID prefix shared with any future item, over the number of SID levels.

    Vectorised: one (pairs, L) comparison over every (generated item, future item) pair and a
    per-row maximum. Items without a SID (unknown ids, ``None``) score 0.
    """
    _check_len(items, future_sets, "future sets")
    out = np.zeros(len(items), dtype=np.float32)
    if not codes_of or not items:
        return out
    levels = len(next(iter(codes_of.values())))
    gen_rows, gen_codes, fut_codes = [], [], []
    for row, (item, fut) in enumerate(zip(items, future_sets)):
        g = codes_of.get(item) if item is not None else None
        if g is None:
            continue
        for f in fut:
            fc = codes_of.get(f)
            if fc is not None:
                gen_rows.append(row)
                gen_codes.append(g)
                fut_codes.append(fc)
    if not gen_rows:
        return out
    eq = np.asarray(gen_codes, dtype=np.int64) == np.asarray(fut_codes, dtype=np.int64)
    shared = np.cumprod(eq, axis=1).sum(axis=1) / levels
    np.maximum.at(out, np.asarray(gen_rows), shared.astype(np.float32))
    return out


def similarity_reward(
    items: Sequence[str | None], target_sets: Sequence[Sequence[str]], item_sim: ItemSimilarity
) -> np.ndarray:
    """Max cosine of each generated item to its target set extended by Swing co-negatives, in [0, 1]."""
    _check_len(items, target_sets, "target sets")
    return item_sim.max_cosine(items, [item_sim.target_set(list(s)) for s in target_sets])


def future_positive_penalty(
    items: Sequence[str | None], future_pos: Sequence[Sequence[str]], item_sim: ItemSimilarity
) -> np.ndarray:
    """-(max cosine of each generated item to the user's future positives), in [-1, 0] (0 for none)."""
    _check_len(items, future_pos, "future positive sets")
    return -item_sim.max_cosine(items, future_pos)


def unseen_mask(items: Sequence[str | None], seen_sets: Sequence[Sequence[str]]) -> np.ndarray:
    """1.0 where the generated item is *not* in the user's history, else 0.0."""
    _check_len(items, seen_sets, "seen sets")
    return np.array([float(i is None or i not in set(s)) for i, s in zip(items, seen_sets)], dtype=np.float32)


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class RewardContext:
    """What some components need besides the batch: SID codes per item, the co-dislike index, the
    item vectors and Swing co-negatives of the similarity reward."""

    codes_of: Mapping[str, Sequence[int]]
    codislike: CoDislike | None
    item_sim: ItemSimilarity | None = None


@dataclass(frozen=True)
class RewardComponent:
    """One reward component: the dataset column holding its per-row target (TRL passes it as a
    keyword argument), how it scores a batch, the :class:`RewardConfig` field of its weight, and
    whether it is a positive *credit* (zeroed on items already in the history when ``exclude_seen``;
    the liked penalty is not a credit).

    Why a registry: the TRL wrapper, :func:`reward_components`, :func:`component_weights` and the
    GRPO logs all iterate :data:`REWARD_COMPONENTS`, so a new component is one entry here.
    """

    name: str
    column: str
    default: Any  # the column's value for a row where it is missing
    score: Callable[[Sequence[str | None], Sequence[Any], RewardContext], np.ndarray]
    weight_field: str
    credit: bool = True
    modes: tuple[str, ...] = ("future_collab",)  # the reward modes that weight it (next_neg weights only `next`)


def _collab_or_zero(items: Sequence[str | None], future: Sequence[Any], ctx: RewardContext) -> np.ndarray:
    if ctx.codislike is None:
        return np.zeros(len(items), dtype=np.float32)
    return collab_reward(items, future, ctx.codislike)


def _sim_or_zero(items: Sequence[str | None], targets: Sequence[Any], ctx: RewardContext) -> np.ndarray:
    if ctx.item_sim is None:
        return np.zeros(len(items), dtype=np.float32)
    return similarity_reward(items, targets, ctx.item_sim)


def _pos_sim_or_zero(items: Sequence[str | None], future_pos: Sequence[Any], ctx: RewardContext) -> np.ndarray:
    if ctx.item_sim is None:
        return np.zeros(len(items), dtype=np.float32)
    return future_positive_penalty(items, future_pos, ctx.item_sim)


REWARD_COMPONENTS: dict[str, RewardComponent] = {
    c.name: c
    for c in (
        RewardComponent("hit", "future_negs", [], lambda items, fut, ctx: hit_reward(items, fut), "w_hit"),
        RewardComponent("collab", "future_negs", [], _collab_or_zero, "w_collab"),
        RewardComponent("prefix", "future_negs", [], lambda items, fut, ctx: prefix_reward(items, fut, ctx.codes_of), "w_prefix"),
        RewardComponent("liked", "liked_items", [], lambda items, liked, ctx: liked_penalty(items, liked), "w_liked", credit=False),
        RewardComponent("next", "next_neg", None, lambda items, nxt, ctx: next_neg_reward(items, nxt), "w_next"),
        # similarity mode: the target set travels as `sim_targets` (the future negatives, or [next_neg]
        # with reward.target: next; grpo.stage_records fills it), the future positives as `future_pos`
        RewardComponent("sim", "sim_targets", [], _sim_or_zero, "w_sim", modes=("similarity",)),
        RewardComponent("pos_sim", "future_pos", [], _pos_sim_or_zero, "gamma", credit=False, modes=("similarity",)),
    )
}
COMPONENTS = tuple(REWARD_COMPONENTS)  # the order TRL gets the reward functions (and logs them) in


def reward_components(
    items: Sequence[str | None],
    future_sets: Sequence[Sequence[str]],
    next_negs: Sequence[str | None],
    liked_sets: Sequence[Sequence[str]],
    codes_of: Mapping[str, Sequence[int]],
    codislike: CoDislike | None,
    item_sim: ItemSimilarity | None = None,
    future_pos: Sequence[Sequence[str]] | None = None,
    sim_target: Literal["future", "next"] = "future",
) -> dict[str, np.ndarray]:
    """Every component for a batch of generated items (one row per completion); ``sim`` / ``pos_sim``
    are 0 without ``item_sim``."""
    columns: dict[str, Sequence[Any]] = {
        "future_negs": future_sets,
        "next_neg": next_negs,
        "liked_items": liked_sets,
        "sim_targets": sim_targets(future_sets, next_negs, sim_target),
        "future_pos": future_pos or [[] for _ in items],
    }
    ctx = RewardContext(codes_of, codislike, item_sim)
    return {name: c.score(items, columns[c.column], ctx) for name, c in REWARD_COMPONENTS.items()}


def component_weights(reward: RewardConfig, mode: RewardMode = "future_collab") -> dict[str, float]:
    """Weights of each component. ``next_neg`` (the ablation) keeps only the next-negative reward;
    ``similarity`` only ``sim`` (``w_sim``) and ``pos_sim`` (``gamma``).

    In ``future_collab`` mode the next-negative weight is ``reward.w_next`` (0 by default); in
    ``next_neg`` mode it is ``reward.w_next`` if positive, else 1, and every other weight is 0 (the
    components are still computed, so the logs show how future hits move under either objective).
    """
    if mode in ("future_collab", "similarity"):
        return {name: float(getattr(reward, c.weight_field)) if mode in c.modes else 0.0 for name, c in REWARD_COMPONENTS.items()}
    if mode == "next_neg":
        return {name: (reward.w_next if reward.w_next > 0 else 1.0) if name == "next" else 0.0 for name in REWARD_COMPONENTS}
    raise ValueError(f"unknown reward mode {mode!r}; choose one of {', '.join(REWARD_MODES)}")


def sim_targets(
    future_sets: Sequence[Sequence[str]], next_negs: Sequence[str | None], target: Literal["future", "next"] = "future"
) -> list[list[str]]:
    """The similarity reward's target sets before the Swing extension: the future negatives, or the
    next negative alone (``reward.target: next``, the conventional objective)."""
    if target == "future":
        return [list(s or []) for s in future_sets]
    return [[n] if n else [] for n in next_negs]


def combine(components: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """``sum_c weights[c] * components[c]`` (the reward GRPO's advantages are computed from)."""
    unknown = set(weights) - set(components)
    if unknown:
        raise ValueError(f"weights for unknown reward component(s) {sorted(unknown)}")
    n = len(next(iter(components.values()))) if components else 0
    total = np.zeros(n, dtype=np.float32)
    for name, w in weights.items():
        total += np.float32(w) * components[name]
    return total


# --------------------------------------------------------------------------- TRL wrapper
class _ComponentReward:
    """One TRL reward function: a single component, named so TRL logs ``rewards/<name>/mean``."""

    def __init__(
        self,
        component: RewardComponent,
        ctx: RewardContext,
        item_of_codes: Mapping[tuple[int, ...], str],
        exclude_seen: bool = True,
    ) -> None:
        self.__name__ = component.name
        self.name = component.name
        self._component = component
        self._ctx = ctx
        self._exclude_seen = exclude_seen
        self._item_of_codes = item_of_codes

    def __call__(self, prompts: list[Any], completions: list[Any], **kw: Any) -> list[float]:
        items = _generated_items(completions, kw.get("gen_item"), self._item_of_codes)
        n = len(items)
        c = self._component
        vals = c.score(items, _column(kw, c.column, n, default=c.default), self._ctx)
        if self._exclude_seen and c.credit and kw.get("seen_items") is not None:
            vals = vals * unseen_mask(items, _column(kw, "seen_items", n, default=[]))
        return [float(v) for v in vals]


def make_reward_funcs(
    reward: RewardConfig,
    sid_map: Any,
    codislike: CoDislike | None,
    mode: RewardMode | None = None,
    exclude_seen: bool = True,
    item_sim: ItemSimilarity | None = None,
) -> tuple[list[Callable[..., list[float]]], list[float]]:
    """TRL reward callables (one per component, in :data:`COMPONENTS` order) and their weights.

    ``reward`` is the ``grpo.reward`` section; ``sid_map`` a :class:`conrec.sid.sid_map.SidMap` or a
    plain ``{item_id: codes}`` mapping. Pass the weights as ``GRPOConfig(reward_weights=...)``;
    zero-weight components still run so their means are logged. ``exclude_seen`` zeroes the positive
    credits of items in the ``seen_items`` column (the GRPO stage passes ``decode.exclude_history``,
    so the policy is rewarded for what evaluation ranks). ``mode`` defaults to ``reward.mode``;
    ``item_sim`` (:class:`ItemSimilarity`) feeds the ``sim`` / ``pos_sim`` components (0 without
    it, so the similarity mode needs it).
    """
    mode = mode or reward.mode
    if mode == "similarity" and item_sim is None:
        raise ValueError("the similarity reward needs item vectors (item_sim)")
    weights = component_weights(reward, mode)
    codes_of = codes_by_item(sid_map)
    item_of_codes = {tuple(int(c) for c in v): k for k, v in codes_of.items()}
    ctx = RewardContext(codes_of, codislike, item_sim)
    funcs: list[Callable[..., list[float]]] = [
        _ComponentReward(REWARD_COMPONENTS[name], ctx, item_of_codes, exclude_seen) for name in COMPONENTS
    ]
    return funcs, [float(weights[name]) for name in COMPONENTS]


def codes_by_item(sid_map: Any) -> dict[str, tuple[int, ...]]:
    """``{item_id: SID codes}`` from a :class:`conrec.sid.sid_map.SidMap` (``items`` + ``codes``) or a mapping."""
    if isinstance(sid_map, Mapping):
        return {str(k): tuple(int(c) for c in v) for k, v in sid_map.items()}
    item_ids = getattr(sid_map, "items", None)
    codes = getattr(sid_map, "codes", None)
    if item_ids is None or codes is None:
        raise TypeError(f"sid_map must be a SidMap (items, codes) or a mapping, got {type(sid_map).__name__}")
    codes = np.asarray(codes)
    return {str(i): tuple(int(c) for c in row) for i, row in zip(list(item_ids), codes)}


def _generated_items(
    completions: Sequence[Any], gen_item: Sequence[str | None] | None, item_of_codes: Mapping[tuple[int, ...], str]
) -> list[str | None]:
    """The item each completion names: the rollout's ``gen_item`` field if present, else the parsed SID."""
    if gen_item is not None:
        if len(gen_item) != len(completions):
            raise ValueError(f"gen_item has {len(gen_item)} entries for {len(completions)} completions")
        return [None if g is None or g == "" else str(g) for g in gen_item]
    out: list[str | None] = []
    for c in completions:
        text = c if isinstance(c, str) else c[-1]["content"]
        codes = parse_sid(text)
        out.append(item_of_codes.get(tuple(codes)) if codes is not None else None)
    return out


def _column(kw: Mapping[str, Any], name: str, n: int, default: Any) -> list[Any]:
    values = kw.get(name)
    if values is None:
        return [default] * n
    if len(values) != n:
        raise ValueError(f"reward column {name!r} has {len(values)} values for {n} completions")
    return [default if v is None else v for v in values]


def _check_len(items: Sequence[Any], other: Sequence[Any], what: str) -> None:
    if len(items) != len(other):
        raise ValueError(f"{len(items)} generated items but {len(other)} {what}")
