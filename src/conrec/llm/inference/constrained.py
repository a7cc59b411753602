"""Constrained generation: the LM can only emit SIDs of real catalogue items.

:class:`SidLogitsProcessor` masks, at every generated position, the whole vocabulary except the
SID tokens of that position's level that extend the already generated prefix to a real item (a
:class:`conrec.sid.trie.SidTrie` query). It is vectorised over batch x beams: the prefix codes come
from a token-id -> code lookup tensor, and the trie is asked once per step for all rows. After ``L``
SID tokens only EOS is allowed. Scores are renormalised over the level's codes (a log-softmax over
that level's SID tokens, before masking), so an item's score is the sum over levels of
``log P(code | prefix)`` among codes: the quantity the SFT loss trains (``sft.train.sid_softmax``),
whatever mass the model leaves on text tokens. Renormalising over the *allowed* children instead
would inflate items whose siblings are excluded or absent. There is no unconstrained fallback: a row whose prefix is not in the
trie (impossible under the mask) gets every token masked, and its output is counted as invalid.

:func:`generate_topk` runs beam search with ``num_beams >= K`` and ``num_return_sequences = K``:
every returned beam is a different token sequence, hence (SIDs being a bijection) a different item,
and a real one. Every generation parameter is set explicitly (:func:`beam_generation_config`),
nothing is taken from the model's ``generation_config``.

For GRPO rollouts: :func:`sample_distinct` draws ``n`` *distinct* valid items per prompt by
constrained sampling (temperature), topped up by constrained beam search when sampling repeats
itself. The processor also works inside any other ``generate`` call (e.g. a TRL trainer's) because
it can locate the generated SID suffix itself (``prompt_len=None``): prompts built by
:mod:`conrec.llm.inference.prompts` always end with a text token, never an SID token.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, PreTrainedTokenizerBase

from conrec.llm.config import DecodeConfig
from conrec.llm.inference.item_prior import TriePrior
from conrec.llm.inference.prompt_ids import encode_prompts
from conrec.llm.inference.sid_beam import sid_beam_search
from conrec.llm.inference.sid_constraint import SidConstraint
from conrec.llm.model.vocab import SidVocab, embedding_rows
from conrec.sid.trie import SidTrie

log = logging.getLogger("conrec.llm")

_NEG_INF = float("-inf")


class SidLogitsProcessor(LogitsProcessor):
    """Allow only the SID tokens that keep each row's generated suffix a prefix of a real item.

    ``prompt_len`` = length of the (left-padded) prompt in ``input_ids``; the generated part is
    ``input_ids[:, prompt_len:]``, so its length is the level. With ``prompt_len=None`` the level of
    each row is the length of its trailing run of SID tokens (for generate calls we do not control).
    """

    def __init__(
        self,
        trie: SidTrie,
        vocab: SidVocab,
        eos_token_id: int,
        prompt_len: int | None = None,
        excluded: torch.Tensor | None = None,
        group_size: int = 1,
    ) -> None:
        if trie.levels != vocab.levels or list(trie.codebook_sizes) != list(vocab.codebook_sizes):
            raise ValueError(
                f"trie codebook sizes {trie.codebook_sizes} do not match the vocabulary's {list(vocab.codebook_sizes)}"
            )
        self.trie = trie
        self.vocab = vocab
        self.eos_token_id = int(eos_token_id)
        self.prompt_len = prompt_len
        self.levels = trie.levels
        # (n_prompts, n_items) bool: items a prompt must not get (its history); row r of the batch
        # x beams layout belongs to prompt r // group_size (beam search keeps a prompt's beams together)
        self.group_size = int(group_size)
        self.constraint = SidConstraint(trie, excluded)

    def _suffix_lengths(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.prompt_len is not None:
            n = max(0, input_ids.shape[1] - self.prompt_len)
            return torch.full((input_ids.shape[0],), n, dtype=torch.long, device=input_ids.device)
        window = input_ids[:, -self.levels - 1 :] if input_ids.shape[1] > self.levels else input_ids
        is_sid = self.vocab.token_to_code.to(input_ids.device)[window] >= 0
        # length of the trailing run of SID tokens: cumulative product from the right
        run = torch.cumprod(is_sid.flip(1).long(), dim=1).sum(1)
        return run

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        to_code = self.vocab.token_to_code.to(input_ids.device)
        lengths = self._suffix_lengths(input_ids)
        out = torch.full_like(scores, _NEG_INF)
        for level in torch.unique(lengths).tolist():  # one level per step in ordinary generate calls
            rows = (lengths == level).nonzero(as_tuple=True)[0]
            if level >= self.levels:
                out[rows, self.eos_token_id] = scores[rows, self.eos_token_id]
                continue
            prefix = to_code[input_ids[rows, input_ids.shape[1] - level :]] if level else input_ids.new_zeros((len(rows), 0))
            allowed = self.constraint.allowed(prefix, rows.cpu() // self.group_size).to(scores.device)
            ids = self.vocab.level_ids[level].to(scores.device)
            sub = scores[rows][:, ids]
            sub = sub - torch.logsumexp(sub, dim=-1, keepdim=True)  # log-softmax over this level's codes
            out[rows.unsqueeze(1), ids.unsqueeze(0)] = torch.where(allowed, sub, torch.full_like(sub, _NEG_INF))
        return out


def beam_generation_config(
    tokenizer: PreTrainedTokenizerBase, levels: int, num_beams: int, num_return: int
) -> GenerationConfig:
    """Deterministic beam search over exactly ``levels`` new tokens; every parameter explicit.

    The Hugging Face reference the SID-only search (:mod:`conrec.llm.inference.sid_beam`) is tested
    against; conrec's own decoding no longer calls ``generate`` with it."""
    return GenerationConfig(
        do_sample=False,
        num_beams=num_beams,
        num_return_sequences=num_return,
        max_new_tokens=levels,
        min_new_tokens=0,
        length_penalty=0.0,  # every SID has the same length: rank by total log-probability
        early_stopping=True,
        temperature=1.0,
        top_k=None,
        top_p=1.0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        output_scores=True,
        return_dict_in_generate=True,
        use_cache=True,
    )


def sample_generation_config(tokenizer: PreTrainedTokenizerBase, levels: int, n: int, temperature: float) -> GenerationConfig:
    """Multinomial sampling of ``n`` sequences per prompt over exactly ``levels`` new tokens."""
    return GenerationConfig(
        do_sample=True,
        num_beams=1,
        num_return_sequences=n,
        max_new_tokens=levels,
        min_new_tokens=0,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        return_dict_in_generate=True,
        use_cache=True,
    )



def constrained_beam_search(
    model: Any,  # a transformers PreTrainedModel (Any: torch's Module.__getattr__ hides its methods' types)
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    trie: SidTrie,
    vocab: SidVocab,
    num_beams: int,
    num_return: int,
    excluded: torch.Tensor | None = None,
    prior: TriePrior | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(item rows (B, num_return) in trie order, -1 = invalid; scores (B, num_return)), best first.

    ``excluded`` (B, n_items) bool: items each prompt may not return. The search runs over the SID
    tokens alone (:func:`conrec.llm.inference.sid_beam.sid_beam_search`); it ranks exactly as
    ``generate`` with :class:`SidLogitsProcessor` and :func:`beam_generation_config` does.
    """
    enc = encode_prompts(tokenizer, prompts, model.device)
    return sid_beam_search(model, enc, trie, vocab, num_beams, num_return, excluded=excluded, prior=prior)


def _shared_prompt_cache(model: Any, enc: dict[str, torch.Tensor], num_beams: int) -> Any:
    """KV cache of every prompt but its last token, computed once per prompt and repeated per beam.

    Why: ``generate`` copies each prompt ``num_beams`` times *before* the prefill, so a top-20 beam
    search would encode every prompt 20 times; prompts are long (histories) and completions are
    ``L`` tokens, so the prefill is nearly all the cost. ``generate`` continues from a given cache
    and feeds only the uncached last token. Positions follow the left padding the way ``generate``
    derives them (``cumsum(attention_mask) - 1``). Returns None when the prompt has one token.
    """
    ids, mask = enc["input_ids"], enc["attention_mask"]
    if ids.shape[1] < 2 or num_beams < 1:
        return None
    head_mask = mask[:, :-1]
    positions = (head_mask.long().cumsum(-1) - 1).clamp(min=0)
    # Only the cache is wanted: logits_to_keep=1 skips the LM head on every other position (with a
    # ~49k-token vocabulary the head costs more than a small model's layers).
    out = model(input_ids=ids[:, :-1], attention_mask=head_mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    if num_beams > 1:
        cache.batch_repeat_interleave(num_beams)
    return cache


def _rows_of(gen: torch.Tensor, trie: SidTrie, vocab: SidVocab) -> torch.Tensor:
    """Trie row of each generated SID (N, L) token sequence; -1 if it is not a whole real item."""
    if gen.shape[1] < trie.levels:
        return torch.full((gen.shape[0],), -1, dtype=torch.long)
    codes = vocab.token_to_code[gen]
    level_ok = (vocab.token_level[gen] == torch.arange(trie.levels)).all(1)
    rows = trie.item_index(codes.clamp(min=0))
    return torch.where(level_ok, rows, torch.full_like(rows, -1))


def generate_topk(
    model: Any,  # a transformers PreTrainedModel (Any: torch's Module.__getattr__ hides its methods' types)
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    trie: SidTrie,
    sid_codes_to_item: Sequence[str],
    k: int,
    decode_cfg: DecodeConfig,
    exclude: Sequence[set[str]] | None = None,
    vocab: SidVocab | None = None,
    stats: dict[str, Any] | None = None,
    prior: TriePrior | None = None,
    row_of: Mapping[str, int] | None = None,
) -> list[list[tuple[str, float]]]:
    """Top-``k`` distinct real items per prompt as (item id, log-probability), best first.

    ``sid_codes_to_item[row]`` is the item id of trie row ``row`` (``SidMap.items``). ``exclude``
    (one set per prompt) masks those items inside the decoding (last SID level), so the user still gets ``k`` new
    ones from ``max(k, num_beams)`` beams. Every set given is masked: whether a history's items are among them
    (``decode.exclude_history``) is the caller's choice (:class:`conrec.llm.inference.predict.Predictor`), since a
    request's own ``exclude`` list applies either way.
    Prompts are processed in batches of ``decode_cfg.batch_size``. ``stats`` (if given) receives
    ``n_generated`` and ``n_invalid`` totals and ``invalid_per_prompt`` (a list, one count per
    prompt); invalid outputs (no real item, or a repeated one) are dropped, never replaced.
    ``row_of`` is ``sid_codes_to_item``'s inverse (item id -> row) when the caller keeps one
    (:class:`conrec.llm.inference.predict.Predictor` does): built for every call otherwise, about 0.1 ms per
    served request on the 1,682-item demo catalogue, growing with the catalogue.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(sid_codes_to_item) != len(trie):
        raise ValueError(f"sid_codes_to_item has {len(sid_codes_to_item)} entries but the trie has {len(trie)} items")
    vocab = vocab or SidVocab.from_tokenizer(tokenizer, trie.codebook_sizes, embedding_rows(model))
    n_items = len(trie)
    use_exclude = exclude is not None
    rows_of: Mapping[str, int] = {} if not use_exclude else row_of if row_of is not None else {item: r for r, item in enumerate(sid_codes_to_item)}
    results: list[list[tuple[str, float]]] = []
    invalid_per_prompt: list[int] = []
    n_invalid = n_generated = 0
    # Beams and results per prompt depend on k and the config only, never on the other prompts of
    # the batch: a row with fewer allowed items than that simply has fewer real hypotheses, whose
    # surplus beams end at -inf and are dropped (they are "no more items", not invalid outputs).
    n_ret = min(k, n_items)
    # at least 2 beams: with one, transformers runs greedy search, which returns no sequence scores
    n_beams = max(2, n_ret, min(n_items, decode_cfg.num_beams))
    for start in range(0, len(prompts), decode_cfg.batch_size):
        batch = prompts[start : start + decode_cfg.batch_size]
        excluded = None
        if use_exclude and exclude is not None:
            excluded = torch.zeros(len(batch), n_items, dtype=torch.bool)
            for i, ex in enumerate(exclude[start : start + len(batch)]):
                excluded[i, [rows_of[x] for x in ex if x in rows_of]] = True
        available = [n_items - (int(excluded[i].sum()) if excluded is not None else 0) for i in range(len(batch))]
        # a history covering the whole catalogue leaves nothing to recommend: no decoding, no output
        live = [i for i, a in enumerate(available) if a > 0]
        batch_rows: dict[int, tuple[list[int], list[float]]] = {}
        if live:
            rows, scores = constrained_beam_search(
                model,
                tokenizer,
                [batch[i] for i in live],
                trie,
                vocab,
                n_beams,
                n_ret,
                excluded=excluded[live] if excluded is not None else None,
                prior=prior,
            )
            batch_rows = {i: (r, s) for i, r, s in zip(live, rows.tolist(), scores.tolist())}
        for b in range(len(batch)):
            r_row, s_row = batch_rows.get(b, ([], []))
            expected = min(n_ret, available[b])  # how many real items this row can get
            seen: set[int] = set()
            recs: list[tuple[str, float]] = []
            bad = 0
            for j, (r, s) in enumerate(zip(r_row, s_row)):
                if j >= expected:
                    break  # beyond this row's allowed items: padding beams, not outputs
                n_generated += 1
                # not a real item, a repeat, or (a decoder bug) an excluded item: counted, never returned
                if r < 0 or r in seen or (excluded is not None and bool(excluded[b, r])):
                    bad += 1
                    continue
                seen.add(r)
                recs.append((sid_codes_to_item[r], float(s)))
            results.append(recs)
            invalid_per_prompt.append(bad)
            n_invalid += bad
    if n_invalid:
        log.warning("constrained decoding produced %d invalid output(s) of %d (%.2f%%)", n_invalid, n_generated, 100 * n_invalid / max(n_generated, 1))
    if stats is not None:
        stats["n_generated"] = stats.get("n_generated", 0) + n_generated
        stats["n_invalid"] = stats.get("n_invalid", 0) + n_invalid
        stats.setdefault("invalid_per_prompt", []).extend(invalid_per_prompt)
    return results


@torch.no_grad()
def sample_distinct(
    model: Any,  # a transformers PreTrainedModel (Any: torch's Module.__getattr__ hides its methods' types)
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: torch.Tensor,
    trie: SidTrie,
    n: int,
    attention_mask: torch.Tensor | None = None,
    vocab: SidVocab | None = None,
    temperature: float = 1.0,
    oversample: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` distinct valid items per prompt, sampled: for GRPO rollouts.

    ``prompt_ids`` (B, T) must be *left*-padded (pass ``attention_mask``). Draws ``oversample * n``
    constrained samples per prompt at ``temperature``, keeps the first ``n`` distinct items in draw
    order, and fills any shortfall with the best not-yet-drawn items of the SID-only beam search
    (:func:`conrec.llm.inference.sid_beam.sid_beam_search`, the drawn items excluded).
    Returns ``(completion_ids (B, n, L), item_rows (B, n))``; rows index the trie (``SidMap.items``).
    Requires ``n <= len(trie)``.
    """
    if n > len(trie):
        raise ValueError(f"cannot draw {n} distinct items from a catalogue of {len(trie)}")
    vocab = vocab or SidVocab.from_tokenizer(tokenizer, trie.codebook_sizes, embedding_rows(model))
    b, prompt_len = prompt_ids.shape
    if attention_mask is None:
        attention_mask = torch.ones_like(prompt_ids)
    m = max(n, oversample * n)
    processor = SidLogitsProcessor(trie, vocab, tokenizer.eos_token_id, prompt_len=prompt_len)
    out = model.generate(
        input_ids=prompt_ids.to(model.device),
        attention_mask=attention_mask.to(model.device),
        generation_config=sample_generation_config(tokenizer, trie.levels, m, temperature),
        logits_processor=LogitsProcessorList([processor]),
    )
    gen = out.sequences[:, prompt_len : prompt_len + trie.levels].cpu()
    rows = _rows_of(gen, trie, vocab).view(b, m)
    gen = gen.view(b, m, -1)
    picked_rows = torch.full((b, n), -1, dtype=torch.long)
    picked_ids = torch.zeros((b, n, trie.levels), dtype=torch.long)
    short = []
    for i in range(b):
        seen: dict[int, int] = {}
        for j, r in enumerate(rows[i].tolist()):
            if r >= 0 and r not in seen and len(seen) < n:
                seen[r] = j
        for slot, (r, j) in enumerate(seen.items()):
            picked_rows[i, slot] = r
            picked_ids[i, slot] = gen[i, j]
        if len(seen) < n:
            short.append(i)
    if short:
        # the best not-yet-drawn items: the SID-only beam search with the drawn ones excluded
        excluded = torch.zeros(len(short), len(trie), dtype=torch.bool)
        for s, i in enumerate(short):
            excluded[s, picked_rows[i][picked_rows[i] >= 0]] = True
        nb = min(len(trie), 2 * n)
        enc = {"input_ids": prompt_ids[short].to(model.device), "attention_mask": attention_mask[short].to(model.device)}
        brows, _ = sid_beam_search(model, enc, trie, vocab, nb, nb, excluded=excluded)
        for s, i in enumerate(short):
            slot = int((picked_rows[i] >= 0).sum())
            fill = [r for r in brows[s].tolist() if r >= 0][: n - slot]
            if fill:
                rows_t = torch.tensor(fill, dtype=torch.long)
                picked_rows[i, slot : slot + len(fill)] = rows_t
                picked_ids[i, slot : slot + len(fill)] = vocab.token_ids(trie.codes_of(rows_t))
    return picked_ids, picked_rows
