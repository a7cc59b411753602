"""Configuration of the data stage: where events come from, and how they are split and labelled."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from conrec.config_base import StrictConfig
from conrec.errors import spoken_list

SIMULATOR_FACETS = ("category", "tone", "setting")  # the simulated items' facet columns (a user dislikes values of these)
MAX_SIMULATOR_CELLS = 200_000_000  # users x items: about 14 GB of the simulator's dense arrays
SIMULATOR_PAIR_BYTES = 70  # the dense user x item arrays, per pair
SIMULATOR_ITEM_BYTES = 700  # per item: the generated titles and text as Python strings, and the items frame (~450-650 measured)
MAX_SIMULATOR_BYTES = 15_000_000_000  # the pairs' 14 GB plus room for the items of the largest such world
SIMULATOR_TONES_AND_SETTINGS = 18  # 8 tones + 10 settings (conrec.data.simulator.TONES, SETTINGS; a test keeps them equal)


class _Strict(StrictConfig):
    """Unknown keys and silent bool/str -> number conversions are errors (see :mod:`conrec.config_base`)."""


class SimulatorConfig(_Strict):
    """Seeded simulator with exposure bias (see :mod:`conrec.data.simulator` for the story).

    Defaults give a few % of feedback as dislikes and a recommender that suppresses items close to
    a just-disliked one for ``suppression_days``, so the next negative reflects exposure order.
    """

    n_users: int = Field(300, ge=2)
    n_items: int = Field(800, ge=10)
    n_categories: int = Field(12, ge=2, le=24, description="categories (shows/genres); at most 24 names exist")
    # bounded: 2.95 M days simulated for minutes and then failed on timestamps past the year 9999, with the table
    # sources' advice (data.ts_unit), which the simulator does not read
    days: int = Field(60, ge=2, le=36_500, description="length of the simulated log in days (at most 36,500, about 100 years)")
    events_per_user_per_day: float = Field(
        15.0, gt=0, le=10_000, description="mean exposures per user per day (each yields a positive, a dislike, or nothing)"
    )
    sessions_per_day: int = Field(
        3, ge=1, le=86_400, description="the recommender re-ranks (and applies suppression) per session; at most one a second"
    )
    dislike_facets_per_user: int = Field(3, ge=1, description="latent dislike facets (a category, tone or setting)")
    dislike_prob_on_facet: float = Field(0.08, ge=0.0, le=1.0, description="P(explicit dislike | exposed item on a facet)")
    dislike_prob_background: float = Field(0.003, ge=0.0, le=1.0, description="P(explicit dislike | other exposed item)")
    positive_prob_min: float = Field(0.10, ge=0.0, le=1.0, description="P(positive) for the user's least liked items")
    positive_prob_max: float = Field(0.60, ge=0.0, le=1.0, description="P(positive) for the user's best liked items")
    # bounded: an infinite or huge weight made every exposure weight NaN (a degenerate world, exit 0), an infinite
    # or huge suppression_days an OverflowError traceback
    popularity_weight: float = Field(1.0, ge=0.0, le=100.0, description="recommender logit weight of log item popularity")
    interest_weight: float = Field(1.0, ge=0.0, le=100.0, description="recommender logit weight of the user's interest score")
    suppression_days: float = Field(5.0, ge=0.0, le=36_500.0, description="how long items close to a dislike stay suppressed")
    suppression_penalty: float = Field(6.0, ge=0.0, description="logit penalty on suppressed items (6 ~ 400x less likely)")
    seed: int = Field(0, ge=0, description="the simulation's random seed (numpy takes seeds >= 0)")

    @model_validator(mode="after")
    def _probabilities(self) -> SimulatorConfig:
        if self.positive_prob_min > self.positive_prob_max:
            raise ValueError("positive_prob_min must be <= positive_prob_max")
        if self.dislike_prob_on_facet + self.positive_prob_max > 1.0:
            raise ValueError("dislike_prob_on_facet + positive_prob_max must be <= 1")
        if self.dislike_prob_background + self.positive_prob_max > 1.0:  # P(positive) would be cut without a word
            raise ValueError("dislike_prob_background + positive_prob_max must be <= 1")
        cells = self.n_users * self.n_items
        if cells > MAX_SIMULATOR_CELLS:  # a numpy MemoryError traceback (93 GiB asked for 1e6 x 1e5)
            raise ValueError(
                f"n_users x n_items = {cells:.3g}: the simulator holds dense user x item arrays (about 70 bytes per pair), "
                f"so at most {MAX_SIMULATOR_CELLS:.0e} pairs (e.g. 100,000 users x 2,000 items); for bigger logs use a table source"
            )
        need = SIMULATOR_PAIR_BYTES * cells + SIMULATOR_ITEM_BYTES * self.n_items
        if need > MAX_SIMULATOR_BYTES:  # few users, a huge catalogue: the pairs fit, the items' strings did not (an OOM kill)
            raise ValueError(
                f"n_items = {self.n_items:,} with {self.n_users:,} users: the simulator needs about {need / 1e9:.3g} GB "
                f"({SIMULATOR_PAIR_BYTES} bytes per user x item pair and about {SIMULATOR_ITEM_BYTES} per item for its "
                f"generated titles and text), at most {MAX_SIMULATOR_BYTES / 1e9:.0f} GB; simulate fewer items or use a table source"
            )
        facets = self.n_categories + SIMULATOR_TONES_AND_SETTINGS
        if self.dislike_facets_per_user > facets:  # drawing distinct facets would never end
            raise ValueError(
                f"dislike_facets_per_user = {self.dislike_facets_per_user} but only {facets} facets exist "
                f"({self.n_categories} categories + {SIMULATOR_TONES_AND_SETTINGS} tones and settings)"
            )
        return self


class SplitConfig(_Strict):
    """Time split and future-window labels.

    ``protocol: global_time``: one valid and one test cut-off for everybody, at event-time
    quantiles so that roughly ``valid_frac`` and ``test_frac`` of all events fall after them; one
    valid and one test point per user. ``protocol: per_user``: each user's last ``test_frac`` share
    of dislikes are test points and the ``valid_frac`` share before them valid points (every one of
    them, so many more evaluation points); see :mod:`conrec.data.splits`.
    """

    protocol: Literal["global_time", "per_user"] = Field(
        "global_time", description="global_time: one cut-off for all users; per_user: each user's last dislikes are test"
    )
    valid_frac: float = Field(0.1, ge=0.0, lt=1.0, description="share of the events (per_user: of each user's dislikes) between the valid and the test cut-off")
    test_frac: float = Field(0.2, gt=0.0, lt=1.0, description="share at/after the test cut-off (per_user: each user's last dislikes); valid_frac + test_frac < 1")
    horizon_days: float = Field(7.0, gt=0, description="N: the future-negative window length in days")
    max_horizon_days: float = Field(30.0, gt=0, description="negatives kept per sample for horizon studies")
    max_history: int = Field(200, ge=1, description="most recent events kept per sample")
    max_train_samples_per_user: int = Field(20, ge=1)
    train_points: Literal["periodic", "recent"] = Field(
        "periodic",
        description="train points: periodic = each user's first dislike of every train_period_days window "
        "(drawn like evaluation points); recent = the user's most recent dislikes",
    )
    train_until: Literal["valid", "test"] = Field(
        "valid",
        description="train points and their labels stop at this cut-off: valid while choosing settings on the "
        "valid split; test = refit on train + valid for the final test run, as the baselines are fitted",
    )
    train_period_days: float = Field(
        7.0,
        gt=0,
        description="periodic train points: window length, windows aligned to end at the train_until cut-off (per user: "
        "the user's valid or test start)",
    )
    min_history: int = Field(1, ge=0, description="evaluation points need at least this many prior events")

    @model_validator(mode="after")
    def _fractions(self) -> SplitConfig:
        if self.valid_frac + self.test_frac >= 1.0:
            raise ValueError("valid_frac + test_frac must be < 1 (something must be left to train on)")
        if self.max_horizon_days < self.horizon_days:
            raise ValueError("max_horizon_days must be >= horizon_days")
        return self

    def trains_on_labels_of(self, split: str) -> bool:
        """Whether a model trained up to ``train_until`` learnt the future labels of ``split``'s points: the valid
        points' futures lie before the test cut-off. The one rule behind the eval stage's refusal to score an LM on
        such points and the inspector's not marking its hits there."""
        return split == "valid" and self.train_until == "test"


class SparkConfig(_Strict):
    """Where ``data.engine: spark`` runs. The master is a Spark master URL: ``local[*]`` on one
    machine, ``spark://host:7077``, ``yarn`` or ``k8s://...`` on a cluster (``spark-submit`` sets it
    for you; see docs/data-at-scale.md)."""

    master: str | None = Field(
        None, description="Spark master URL; unset: $CONREC_SPARK_MASTER, else the one spark-submit set, else local[*]"
    )
    conf: dict[str, str] = Field(
        default_factory=dict, description="extra Spark settings, e.g. {spark.executor.memory: 8g, spark.sql.shuffle.partitions: '400'}"
    )


SOURCE_READS: dict[str, tuple[str, ...]] = {
    "movielens100k": (),
    "simulator": (),
    "table": ("events_path", "items_path", "columns"),
    "movielens": ("events_path", "items_path"),
    "kuairand": ("events_path", "items_path"),
    "amazon": ("events_path", "items_path"),
}
"""Which of the file settings (:data:`FILE_SETTINGS`) each ``data.source`` reads (its loader in
:mod:`conrec.data.sources`; a test keeps the two in step). A setting the source does not read is refused."""
FILE_SETTINGS = ("events_path", "items_path", "columns")

TABLE_SETTINGS: dict[str, object] = {"ts_unit": "auto", "ts_format": None, "feedback_labels": {}, "rating_range": None}
"""The settings only ``data.source: table`` reads (its loader and the engines' table scans), with their defaults:
another source given one of them is refused, as a file setting it does not read is. ``dislike_max_rating`` and
``like_min_rating`` are not among them (MovieLens and Amazon read them too, and the presets set them for any source)."""

SOURCE_LOADS = {"movielens100k": "the embedded MovieLens-100K", "simulator": "a simulated log"}
"""What each source that reads no file loads (for the refusal of file settings it ignores)."""


YAML_BOOLEAN_WORDS = {True: ("true", "yes", "on"), False: ("false", "no", "off")}
"""The words YAML 1.1 reads as a boolean key (``yes: -1`` is ``True: -1``): a boolean label key stands for each."""


def _unread_settings(ignored: list[str], source: str) -> tuple[str, str]:
    """The head of the refusal of settings ``source`` does not read (``data.x and data.y are set, but data.source: S
    does not read them``) and the pronoun for them (``it``/``them``): the file and the table settings' refusals alike."""
    what = "it" if len(ignored) == 1 else "them"
    return f"{spoken_list(ignored)} {'is' if len(ignored) == 1 else 'are'} set, but data.source: {source} does not read {what}", what


class DataConfig(_Strict):
    """Which events to load (``source``) and how to split and label them.

    ``events_path`` may name a directory for ``kuairand`` (every ``log*.csv`` inside is read).
    """

    source: Literal["movielens100k", "simulator", "table", "movielens", "kuairand", "amazon"] = Field(
        "movielens100k",
        description="where events come from: table = your CSV/Parquet files (see data.columns; `conrec init` writes it), "
        "movielens / kuairand / amazon = those datasets' own files, movielens100k = the embedded dataset (offline), "
        "simulator = synthetic users with known tastes",
    )
    events_path: Path | None = Field(None, description="events/ratings/log/reviews file for file-based sources (table, movielens, kuairand, amazon; "
        "set with another source: an error)")
    items_path: Path | None = Field(None, description="item metadata file for file-based sources (set with another source: an error)")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="source column -> canonical column, for source=table (CSV or Parquet; set with another source: an error)",
    )
    feedback_labels: dict[str, Literal[-1, 0, 1]] = Field(
        default_factory=dict,
        description="source=table: values of the feedback column -> -1 (dislike), +1 (positive) or 0 (neutral, dropped), "
        "e.g. {not_interested: -1, hide: -1, like: 1, impression: 0}, or for a flag {'true': -1, 'false': 1}; compared in "
        "lower case with spaces and hyphens as '_'; a value not named is an invalid row (see on_invalid); set with another source: an error",
    )
    dislike_max_rating: float = Field(2.0, description="rating <= this is a dislike (MovieLens, Amazon)")
    like_min_rating: float = Field(4.0, description="rating >= this is a positive (MovieLens, Amazon); the demo and full presets set 3, so lukewarm ratings count as exposures too")
    rating_range: tuple[float, float] | None = Field(
        None,
        description="source=table: the rating scale [low, high] (e.g. [0.5, 5]); ratings outside it are invalid rows (see on_invalid); "
        "set with another source: an error",
    )
    on_invalid: Literal["drop", "error"] = Field(
        "drop",
        description="bad rows and items (empty title, unknown item, missing/NaN/negative time, bad feedback, exact duplicates): "
        "drop = repair or drop each with a count (printed, and kept in data/stats.json); error = stop at the first",
    )
    ts_unit: Literal["auto", "s", "ms", "us"] = Field(
        "auto", description="source=table integer timestamps: seconds, milliseconds, microseconds, or auto (ms if all > 1e11); "
        "set with another source: an error"
    )
    ts_format: str | None = Field(
        None,
        description="source=table date/time strings: their strftime layout, e.g. '%m/%d/%Y %H:%M'; None = detected "
        "(a layout that reads as month/day and day/month alike is refused); set, it reads integers too ('%Y%m%d': 20231225); "
        "set with another source: an error",
    )
    simulator: SimulatorConfig = Field(default_factory=SimulatorConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    engine: Literal["polars", "spark"] = Field(
        "polars", description="what executes the split and labelling: polars on this machine, or Spark (needs pyspark, the spark extra's package, "
        "and Java 17)"
    )
    streaming: Literal["auto", "on", "off"] = Field(
        "auto",
        description="polars engine: out of core, one user partition in memory at a time; auto = on for a table "
        "source whose events file has at least streaming_min_events rows",
    )
    streaming_min_events: int = Field(20_000_000, ge=1, description="streaming: auto switches on from this many events")
    partition_events: int = Field(
        4_000_000, ge=1, description="streaming: events per user partition held in memory (measured: ~0.3 GiB RSS per million)"
    )
    spark: SparkConfig = Field(default_factory=SparkConfig)

    @field_validator("streaming", mode="before")
    @classmethod
    def _yaml_on_off(cls, value: object) -> object:
        """YAML 1.1 reads an unquoted ``on`` / ``off`` as true / false, so the documented
        ``streaming: on`` arrives as a bool: read it as the word it was."""
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("feedback_labels", mode="before")
    @classmethod
    def _no_booleans(cls, labels: object) -> object:
        """Values must be -1/0/1, never true/false; keys are the column's values as text, so YAML's unquoted
        ``1:`` or ``true:`` (a flag's values) are read as ``"1"`` and ``"true"``.

        An unquoted ``yes:`` / ``no:`` (or ``on:`` / ``off:``) arrives as true / false too, and read as ``"true"`` /
        ``"false"`` it matched no value of a yes/no column: every row was dropped as bad feedback. Which word
        was written cannot be told after YAML, so a boolean key stands for each of them (the column holds one).
        """
        if not isinstance(labels, dict):
            return labels
        if flags := [k for k, v in labels.items() if isinstance(v, bool)]:
            raise ValueError(f"label(s) {flags} map to true/false; use -1 (dislike), 1 (positive) or 0 (neutral)")
        out: dict[object, object] = {}
        for k, v in labels.items():
            if isinstance(k, bool):
                out.update(dict.fromkeys(YAML_BOOLEAN_WORDS[k], v))
            else:
                out[str(k) if isinstance(k, (int, float)) else k] = v
        return out

    @field_validator("feedback_labels")
    @classmethod
    def _normalised_labels(cls, labels: dict[str, int]) -> dict[str, int]:
        from conrec.data.feedback_labels import normalise

        out: dict[str, int] = {}
        for key, value in labels.items():
            if out.get(normalise(key), value) != value:
                raise ValueError(f"label {key!r} is given twice with different values (labels compare as {normalise(key)!r})")
            out[normalise(key)] = value
        return out

    @model_validator(mode="after")
    def _files_the_source_reads(self) -> DataConfig:
        """Refuse file settings (``events_path``, ``items_path``, ``columns``) that ``source`` does not read.

        Why: ``events_path`` and ``columns`` written without ``source: table`` were ignored without a word, and the
        run loaded the embedded MovieLens-100K (the default source): a results table for the wrong data set."""
        ignored = [f"data.{k}" for k in FILE_SETTINGS if getattr(self, k) and k not in SOURCE_READS[self.source]]
        if ignored:
            head, what = _unread_settings(ignored, self.source)
            if self.source in SOURCE_LOADS:
                raise ValueError(f"{head} (it loads {SOURCE_LOADS[self.source]}); for your own CSV/Parquet files set data.source: table")
            raise ValueError(f"{head} (it reads its data set's own files); remove {what}, or set data.source: table for your own CSV/Parquet files")
        return self

    @model_validator(mode="after")
    def _table_settings_only_for_tables(self) -> DataConfig:
        """Refuse the table source's own settings (:data:`TABLE_SETTINGS`) set with another source.

        Why: ``ts_unit: ms`` or ``rating_range: [1, 5]`` with ``source: simulator`` or ``movielens`` were read by
        nothing, and the user believed they applied; refused like the file settings above, not warned (a
        config error is how this config treats a setting its source ignores)."""
        if self.source == "table":
            return self
        ignored = [f"data.{k}" for k, default in TABLE_SETTINGS.items() if getattr(self, k) != default]
        if ignored:
            head, what = _unread_settings(ignored, self.source)
            raise ValueError(
                f"{head} (only data.source: table reads {', '.join(TABLE_SETTINGS)}); remove {what}, or set data.source: table "
                "for your own CSV/Parquet files"
            )
        return self

    @model_validator(mode="after")
    def _ratings(self) -> DataConfig:
        if self.dislike_max_rating >= self.like_min_rating:
            raise ValueError("dislike_max_rating must be < like_min_rating (a rating cannot be both)")
        if self.rating_range is not None and not self.rating_range[0] < self.rating_range[1]:
            raise ValueError("rating_range must be [low, high] with low < high")
        return self
