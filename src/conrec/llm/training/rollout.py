"""The GRPO rollout hook: every group is G distinct, valid catalogue items from constrained beam search.

Why beam search rather than sampling: a group of G completions only carries a learning signal when
its rewards differ. Free sampling from a peaked SFT policy returns the same item many times (equal
rewards, zero advantage, wasted compute) and, over ~10^3 items, rarely reaches the future set.
Constrained beam search with ``num_beams = num_return_sequences = G`` returns the policy's top-G
items, all distinct (distinct SIDs are distinct items) and all valid (the SID trie masks every
step, so the invalid rate is 0 by construction; it is still measured and logged).

The honest cost: beams are not samples from the policy, so the GRPO loss is no longer an unbiased
estimate of the policy gradient of the expected reward. With group-normalised advantages it acts as
a listwise ranking update on the policy's own top-G list: items with above-average reward are
pushed up, the rest down (the same choice as MiniOneRec / OneRec-style GRPO for recommendation).
The KL term (TRL's k3 estimator on these completions) is likewise evaluated on the top-G list,
not on policy samples. Beam search is deterministic, so there is no exploration beyond the top-G;
G (``cfg.grpo.num_generations``) is the exploration knob.

TRL contract (trl 1.16, ``GRPOTrainer(rollout_func=...)``): the hook receives this process's slice
of the generation batch, in which each prompt already appears G times in a row (TRL's
``RepeatSampler``); a group may straddle two processes under ``accelerate launch``. Position ``i``
of process ``p`` is member ``(p * n + i) mod G`` of its group, and gets the beam of that rank, so a
group split across processes still holds G distinct items (beam search is deterministic given the
synchronised weights). Samples are not: ``rollout: sample`` on several processes is refused unless
every process holds whole groups (:func:`conrec.llm.training.grpo.check_group_batch`), and duplicates
are counted on the gathered batch (:func:`whole_group_duplicates`). ``logprobs`` is returned as
``None``: without vLLM, TRL recomputes the old log-probs from the policy itself when it needs them
(at temperature 1, whatever ``grpo.temperature`` the samples were drawn at), and beam scores are
not sampling log-probs anyway. The generated item ids travel to the reward functions in the extra field ``gen_item``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from conrec.llm.inference.prompt_ids import prompt_token_ids
from conrec.llm.model.vocab import SidVocab
from conrec.sid.trie import SidTrie


class TopKItems(Protocol):
    """Constrained decoding of K distinct valid items per prompt.

    ``model`` is the unwrapped policy, ``prompts`` the prompt texts; returns a (P, K) LongTensor
    of item rows (``sid_map.items`` order), -1 where fewer than K valid items were found.
    """

    def __call__(self, model: Any, prompts: Sequence[str], k: int) -> torch.Tensor: ...


def beam_topk(tokenizer: Any, trie: SidTrie, vocab: SidVocab) -> TopKItems:
    """Top-K items by constrained beam search (``num_beams = num_return_sequences = K``)."""
    from conrec.llm.inference.constrained import constrained_beam_search

    def topk(model: Any, prompts: Sequence[str], k: int) -> torch.Tensor:
        rows, _ = constrained_beam_search(model, tokenizer, list(prompts), trie, vocab, num_beams=k, num_return=k)
        return rows

    return topk


def sample_topk(tokenizer: Any, trie: SidTrie, vocab: SidVocab, temperature: float) -> TopKItems:
    """K distinct items by constrained sampling at ``temperature`` (beam top-up when samples repeat)."""
    from conrec.llm.inference.constrained import sample_distinct
    from conrec.llm.inference.prompt_ids import encode_prompts

    def topk(model: Any, prompts: Sequence[str], k: int) -> torch.Tensor:
        enc = encode_prompts(tokenizer, prompts, model.device)  # left-padded, as generation needs
        _, rows = sample_distinct(
            model, tokenizer, enc["input_ids"], trie, k, attention_mask=enc["attention_mask"], vocab=vocab,
            temperature=temperature,
        )
        return rows

    return topk


@dataclass
class RolloutStats:
    """Running counters, read by the reward-log callback and the benchmark."""

    calls: int = 0
    completions: int = 0
    invalid: int = 0
    duplicates: int = 0  # completions repeating an item already in their group, all processes' (must be 0)
    seconds: float = 0.0
    last_invalid_rate: float = 0.0
    history: list[float] = field(default_factory=list)  # seconds per call

    @property
    def invalid_rate(self) -> float:
        return self.invalid / self.completions if self.completions else 0.0


def group_members(n_local: int, process_index: int, num_generations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(member rank of each local position, group index of each local position) for TRL's layout.

    TRL repeats each prompt ``num_generations`` times consecutively across the whole generation
    batch and gives process ``p`` the positions ``[p * n, (p + 1) * n)``.
    """
    member = (process_index * n_local + torch.arange(n_local)) % num_generations
    starts = member == 0
    starts[0] = True
    group = torch.cumsum(starts.long(), 0) - 1
    return member, group


class ConstrainedRollout:
    """``rollout_func`` for :class:`trl.GRPOTrainer`: G distinct valid items per prompt group.

    ``tokenizer`` encodes prompts exactly as SFT and prediction do
    (:func:`conrec.llm.inference.prompt_ids.prompt_token_ids`: the special tokens the tokenizer puts
    in front of a text, then the plain text); ``topk`` is the constrained decoder (:func:`beam_topk` or :func:`sample_topk`);
    ``item_token_ids`` is the (n_items, L) tensor of SID token ids per item row; ``eos_id`` ends
    every completion (SFT appends EOS to every SID answer).
    """

    def __init__(
        self,
        tokenizer: Any,
        topk: TopKItems,
        item_ids: Sequence[str],
        item_token_ids: torch.Tensor,
        eos_id: int,
        num_generations: int,
    ) -> None:
        if item_token_ids.dim() != 2 or item_token_ids.shape[0] != len(item_ids):
            raise ValueError(
                f"item_token_ids must have shape ({len(item_ids)}, levels), got {tuple(item_token_ids.shape)}"
            )
        self._tokenizer = tokenizer
        self._topk = topk
        self._items = list(item_ids)
        self._item_tokens = item_token_ids.long().cpu()
        self._eos = int(eos_id)
        self.num_generations = int(num_generations)
        self.stats = RolloutStats()
        self.__name__ = "constrained_beam_rollout"

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, Any]:
        started = time.perf_counter()
        texts = [_prompt_text(p) for p in prompts]
        n = len(texts)
        process_index = int(trainer.accelerator.process_index) if trainer is not None else 0
        member, group = group_members(n, process_index, self.num_generations)
        starts = torch.nonzero(torch.cat([torch.tensor([True]), group[1:] != group[:-1]])).reshape(-1)
        group_texts = [texts[int(s)] for s in starts.tolist()]
        group_prompt_ids = prompt_token_ids(self._tokenizer, group_texts)  # the ids SFT trained and _generate decodes from
        rows = self._generate(trainer, group_texts)  # (P, G)
        if rows.shape != (len(starts), self.num_generations):
            raise RuntimeError(
                f"constrained decoder returned shape {tuple(rows.shape)}, expected ({len(starts)}, {self.num_generations})"
            )
        chosen = rows.cpu()[group, member]  # (n,)
        valid = chosen >= 0
        tokens = self._item_tokens[chosen.clamp(min=0)]
        eos = torch.full((n, 1), self._eos, dtype=torch.long)
        completion = torch.cat([tokens, eos], dim=1).tolist()
        valid_list = valid.tolist()
        completion_ids = [c if ok else [self._eos] for c, ok in zip(completion, valid_list)]
        gen_item = [self._items[r] if ok else None for r, ok in zip(chosen.tolist(), valid_list)]
        prompt_ids = [group_prompt_ids[g] for g in group.tolist()]

        elapsed = time.perf_counter() - started
        n_invalid = int((~valid).sum())
        self.stats.duplicates += whole_group_duplicates(trainer, chosen, self.num_generations)
        self.stats.calls += 1
        self.stats.completions += n
        self.stats.invalid += n_invalid
        self.stats.seconds += elapsed
        self.stats.last_invalid_rate = n_invalid / n if n else 0.0
        self.stats.history.append(elapsed)
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None, "gen_item": gen_item}

    def _generate(self, trainer: Any, prompts: list[str]) -> torch.Tensor:
        if trainer is None:
            raise ValueError("ConstrainedRollout needs the trainer (TRL passes it as the second argument)")
        from trl.models import unwrap_model_for_generation

        with (
            unwrap_model_for_generation(
                trainer.model_wrapped, trainer.accelerator, gather_deepspeed3_params=trainer.args.ds3_gather_for_generation
            ) as model,
            torch.no_grad(),
            trainer.accelerator.autocast(),  # rollouts decode in the training precision (bf16/fp16 on a GPU, fp32 on CPU)
        ):
            return self._topk(model, prompts, self.num_generations)


def whole_group_duplicates(trainer: Any, chosen: torch.Tensor, num_generations: int) -> int:
    """Duplicates of the whole generation batch, every process's completions gathered (this process's ``chosen``
    item rows are its slice): a group split across processes is checked as it really is, not half by half.
    Global position ``q`` is member ``q mod G`` of group ``q // G`` (TRL's layout, :func:`group_members`)."""
    acc = getattr(trainer, "accelerator", None)
    rows = chosen
    if acc is not None and int(getattr(acc, "num_processes", 1)) > 1:
        rows = acc.gather(chosen.to(acc.device)).cpu()  # a collective: every process's rollout calls it at once
    return count_duplicates(torch.arange(len(rows)) // num_generations, rows)


def count_duplicates(group: torch.Tensor, rows: torch.Tensor) -> int:
    """Positions whose valid item already occurs earlier in the same group (vectorised: sort + compare)."""
    ok = rows >= 0
    g, r = group[ok], rows[ok]
    if g.numel() < 2:
        return 0
    key = g * (int(r.max()) + 1) + r
    key, _ = torch.sort(key)
    return int((key[1:] == key[:-1]).sum())


def item_token_table(vocab: SidVocab, codes: Any) -> torch.Tensor:
    """(n_items, L) token ids of each item's SID tokens (a gather per level, no per-item loop)."""
    codes = torch.as_tensor(codes, dtype=torch.long)
    if codes.dim() != 2 or codes.shape[1] != vocab.levels:
        raise ValueError(f"codes must have shape (n_items, {vocab.levels}), got {tuple(codes.shape)}")
    return torch.stack([vocab.level_ids[level][codes[:, level]] for level in range(vocab.levels)], dim=1)


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    raise TypeError(f"GRPO prompts must be plain strings (rendered by conrec.llm.inference.prompts), got {type(prompt).__name__}")
