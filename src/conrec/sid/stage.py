"""The ``sid`` stage: items -> vectors -> codes -> collision-free SID map.

Reads ``data/items.parquet``; writes ``sid/text_vectors.npy`` (the encoder's vectors, rows in items
order), ``sid/embeddings.npy`` (the quantizer's input: those, or with a collaborative part),
``sid/quantizer.pt`` (the quantizer's state, which the GRPO reward reads to rebuild item vectors from codes),
``sid/sid_map.parquet`` and ``sid/stats.json``; then marks the stage done. Same items file, config and seed ->
identical SID map, and with ``sid.collab`` also the same events file and ``data`` settings (the training events are
part of the quantizer's input); any change to these inputs re-fits the quantizer from scratch and reassigns (almost)
every SID, so the model must be retrained (nothing encodes new items into an old map).
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any, cast

import faiss
import numpy as np
import polars as pl
import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from conrec.console_text import shown
from conrec.io import write_json, write_npy, write_torch
from conrec.progress import stage_progress
from conrec.runs import RunDir
from conrec.sid.category_level import with_category_level
from conrec.sid.collisions import EXACT_MAX_ITEMS, TRANSPORT_MAX_PAIRS, resolve_collisions
from conrec.sid.config import QuantizerConfig
from conrec.sid.encoder import TextEncoder, encode_items
from conrec.sid.metrics import codebook_usage, collision_rate, max_items_per_code, purity_lift, purity_lift_undefined
from conrec.sid.preflight import preflight
from conrec.sid.quantize_result import QuantizeResult, effective_codebook_sizes
from conrec.sid.quantizers import quantizer
from conrec.sid.sid_map import SidMap
from conrec.stages import SidSections


def quantize(
    vectors: np.ndarray, sizes: list[int], cfg: QuantizerConfig, seed: int, progress: Progress | None = None
) -> QuantizeResult:
    """Run the configured quantizer (``sid.quantizer.kind``: :data:`conrec.sid.quantizers.QUANTIZERS`) on the item vectors."""
    return quantizer(cfg.kind).fit(vectors, sizes, cfg, seed, progress)


def with_collaborative_part(text: np.ndarray, rd: RunDir, items: pl.DataFrame, sections: SidSections) -> np.ndarray:
    """The text vectors concatenated with the training events' collaborative vectors (both
    L2-normalised, the collaborative part times ``sid.collab.weight``), renormalised."""
    from conrec.data.fit_events import training_events
    from conrec.sid.collab_vectors import collaborative_vectors, interaction_matrix
    from conrec.sid.encoder import l2_normalise

    collab = sections.sid.collab
    assert collab is not None
    fit = training_events(rd.root, sections.split)
    ids = items["item_id"].cast(pl.String).to_list()
    vec = collaborative_vectors(interaction_matrix(fit, ids, collab.feedback), collab.dims, sections.seed)
    both = np.concatenate([l2_normalise(text, "text vectors"), collab.weight * vec], axis=1)
    return l2_normalise(both, "text + collaborative vectors")


def _progress(console: Console | None) -> Progress:
    return stage_progress(console=console, label="[progress.description]{task.description}", remaining=False)


def run(
    sections: SidSections, run_dir: Path, console: Console | None = None, encoder: TextEncoder | None = None
) -> dict[str, Any]:
    """Build the SID map of the run's items; return the stats written to ``sid/stats.json``.

    Takes the stage's declared sections (``sid``, ``seed``) and the run directory (the stage
    protocol of :mod:`conrec.stages`). ``encoder`` replaces the configured sentence-transformers
    model (tests, custom encoders).
    """
    console = console or Console()
    rd = RunDir(run_dir)
    items, category_prefix = preflight(sections, run_dir)  # the pipeline checked it before touching the run; a direct call alike
    qcfg = sections.sid.quantizer
    seed = qcfg.seed if qcfg.seed is not None else sections.seed
    threads = qcfg.num_threads or torch.get_num_threads()  # None: the process's count (conrec.runtime)
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    seconds: dict[str, float] = {}
    notes: list[str] = []

    with _progress(console) as progress:
        t = time.perf_counter()
        vectors, enc_info = encode_items(items, sections.sid.encoder, encoder=encoder, progress=progress)
        write_npy(vectors, rd.text_vectors)  # the content baseline compares items by text alone
        if sections.sid.collab is not None:
            vectors = with_collaborative_part(vectors, rd, items, sections)
            enc_info["collab_dims"] = sections.sid.collab.dims
        seconds["encode"] = time.perf_counter() - t
        notes += cast(list[str], enc_info.pop("cache_notes", []))  # an embedding cache that could not be used
        if n_cut := int(cast(int, enc_info.get("texts_truncated") or 0)):
            notes.append(
                f"{n_cut} item text(s) are longer than the encoder's maximum sequence length and were cut: what follows "
                f"in sid.encoder.text_fields order (e.g. the category after a long title) was not encoded, "
                f"e.g. items {enc_info['texts_truncated_examples']}"
            )
        if n_empty := int(cast(int, enc_info.get("texts_empty") or 0)):
            notes.append(
                f"{n_empty} item(s) have no text in sid.encoder.text_fields {sections.sid.encoder.text_fields}: they were "
                f"encoded as an empty string, so {_shared_text_consequence(sections)}, e.g. items {enc_info['texts_empty_examples']}"
            )
        if n_same := int(cast(int, enc_info.get("texts_duplicate") or 0)):
            notes.append(
                f"{n_same} item(s) have the same text in sid.encoder.text_fields {sections.sid.encoder.text_fields} as "
                f"another item, so {_shared_text_consequence(sections)}, e.g. items "
                f"{enc_info['texts_duplicate_examples']}"
            )
        write_npy(vectors, rd.embeddings)

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sizes = effective_codebook_sizes(len(vectors), qcfg.requested_sizes(), qcfg.auto_scale)
        notes += [str(w.message) for w in caught]
        if not qcfg.auto_scale and (oversized := _oversized_note(len(vectors), sizes)) is not None:
            notes.append(oversized)

        t = time.perf_counter()
        torch.set_num_threads(qcfg.train_threads if quantizer(qcfg.kind).trains_with_torch else threads)
        try:
            result = quantize(vectors, sizes, qcfg, seed, progress)
        finally:
            torch.set_num_threads(threads)
        seconds["quantize"] = time.perf_counter() - t
        if math.isfinite(result.recon_rel) and result.recon_rel > 1:
            notes.append(
                f"relative reconstruction error {result.recon_rel:.2f} > 1: the codes reconstruct the item vectors worse "
                "than their mean does (too few epochs, or codebooks too large for the catalogue)"
            )

    t = time.perf_counter()
    resolution = resolve_collisions(result.codes, result.codebook_sizes, result.last_residual, result.last_codebook)
    item_ids = items["item_id"].cast(pl.String).to_list()
    final_codes, final_sizes, prefix_levels = resolution.codes, list(resolution.codebook_sizes), 0
    if category_prefix is not None:
        final_codes, final_sizes = with_category_level(final_codes, final_sizes, category_prefix)
        prefix_levels = 1
        notes.append(f"category level: every SID starts with one of {len(category_prefix[1])} category codes")
    sid_map = SidMap(item_ids, final_codes, final_sizes)
    seconds["collisions"] = time.perf_counter() - t
    if resolution.extra_level:
        notes.append(
            f"a prefix had more items than the {result.codebook_sizes[-1]} last-level codes: added a "
            f"disambiguation level of size {resolution.codebook_sizes[-1]}"
        )
    if resolution.greedy_items:
        notes.append(
            f"{resolution.greedy_items:,} item(s) are in prefix groups too large and varied for an optimal spread over "
            f"the last-level codes (over {EXACT_MAX_ITEMS:,} items and over {TRANSPORT_MAX_PAIRS:,} distinct vector x "
            "code pairs): they were spread greedily, nearest code with room first"
        )

    categories = items["category"].cast(pl.String).to_list() if "category" in items.columns else [None] * len(items)
    if (control := _control_text_note(items, item_ids)) is not None:
        notes.append(control[1])
    stats: dict[str, Any] = {
        "n_items": len(item_ids),
        "quantizer": qcfg.kind,
        "seed": seed,
        "encoder": {k: v for k, v in enc_info.items() if k != "fusion_state"},
        "codebook_sizes_requested": qcfg.requested_sizes(),
        "codebook_sizes_quantizer": result.codebook_sizes,
        "codebook_sizes": final_sizes,
        "recon_mse": _finite_or_none(result.recon_mse),
        "recon_rel": _finite_or_none(result.recon_rel),  # null: the vectors do not vary (one item, identical texts)
        "usage_before": codebook_usage(result.codes, result.codebook_sizes),
        "usage_after": codebook_usage(final_codes, final_sizes),  # per level of codebook_sizes, the category level included
        "collision_rate_before": collision_rate(result.codes),
        "max_items_per_code_before": max_items_per_code(result.codes),
        "collision_rate_after": collision_rate(resolution.codes),
        "items_moved": resolution.moved,  # last-level code changed
        "items_extra_code": resolution.extra_coded,  # a non-zero code on the extra disambiguation level
        "items_recoded": resolution.recoded,  # either: the SID is not the quantizer's own code
        "extra_level": resolution.extra_level,
        "items_control_text": control[0] if control is not None else 0,  # title/category reads as a SID or marker token
        "purity_lift_level0": _finite_or_none(purity_lift(resolution.codes[:, 0], categories)),  # null: see _na
        "purity_lift_level0_na": purity_lift_undefined(resolution.codes[:, 0], categories),  # why it is null
        "final_epoch_losses": result.history[-1] if result.history else None,
        "seconds": seconds,
        "notes": notes,
    }

    write_torch(
        {
            "quantizer": result.state,
            "fusion_state": {k: torch.from_numpy(np.asarray(v)) for k, v in cast(dict[str, Any], enc_info.get("fusion_state") or {}).items()},
            "encoder": stats["encoder"],
            "codebook_sizes": final_sizes,
            "prefix_levels": prefix_levels,  # SID levels before the quantizer's own (item_vectors.reconstruct skips them)
            "seed": seed,
        },
        rd.quantizer,
    )
    sid_map.to_parquet(rd.sid_map)
    write_json(stats, rd.sid / "stats.json")
    _print_summary(console, stats)
    rd.mark_done("sid", {"n_items": len(item_ids), "codebook_sizes": final_sizes})
    return stats


def _print_summary(console: Console, s: dict[str, Any]) -> None:
    for note in s["notes"]:
        console.print(f"[yellow]note:[/yellow] {shown(note)}")
    table = Table(title=f"Semantic IDs ({s['quantizer']}, {s['n_items']} items)", show_header=False)
    table.add_row("codebook sizes", str(s["codebook_sizes"]))
    rel = s["recon_rel"]
    table.add_row("reconstruction error (relative)", "n/a (the item vectors do not vary)" if rel is None else f"{rel:.3f}")
    # per level of the codebook sizes above (the SIDs' levels, the category and extra levels included); usage_before,
    # the quantizer's own levels before collision resolution, is in stats.json: the two rows disagreed on the levels
    usage = ", ".join(f"{u['used']}/{u['size']} (ppl {u['perplexity']:.1f})" for u in s["usage_after"])
    table.add_row("codes used per level", usage)
    table.add_row(
        "collision rate before -> after", f"{s['collision_rate_before']:.1%} -> {s['collision_rate_after']:.1%}"
    )
    table.add_row("items moved to free last-level codes", str(s["items_moved"]))
    if s["extra_level"]:
        table.add_row("items given a non-zero extra-level code", str(s["items_extra_code"]))
        table.add_row("items whose SID is not the quantizer's code", f"{s['items_recoded']} of {s['n_items']}")
    lift = s["purity_lift_level0"]
    table.add_row("purity lift (level-0 code vs category)", f"n/a ({s['purity_lift_level0_na']})" if lift is None else f"{lift:.2f}")
    table.add_row("seconds (encode / quantize / collisions)", " / ".join(f"{v:.1f}" for v in s["seconds"].values()))
    console.print(table)


def _control_text_note(items: pl.DataFrame, item_ids: list[str]) -> tuple[int, str] | None:
    """(how many, a note) when item titles or categories contain text of conrec's control tokens (``<a_3>``, ``<dis>``),
    else None. Why: such text would become those tokens in the SFT prompts, which break it instead
    (:mod:`conrec.llm.inference.item_text`); the note says so before any training."""
    from conrec.llm.inference.item_text import items_with_control_text

    rows = items_with_control_text(items)
    if not rows:
        return None
    return len(rows), (
        f"{len(rows)} item(s) have a title or category containing a model control token's text (a SID such as <a_3>, a "
        f"prompt marker such as <dis>), e.g. items {[item_ids[i] for i in rows[:5]]}: the SFT prompts break it "
        "('<a_3>' -> '< a_3>') so that it never becomes that token"
    )


def _shared_text_consequence(sections: SidSections) -> str:
    """What items with one text (blank or identical) have in common, for the notes: one vector, unless ``sid.collab``
    or extra vectors add a part of their own to each item's. "Up to float rounding": every item is encoded, in
    batches, and one text in two batches can come out ~1e-7 apart (collision resolution treats such rows as one
    vector, :data:`conrec.sid.collisions.SAME_ROW_TOL`)."""
    if sections.sid.collab is None and sections.sid.encoder.extra_vectors_path is None:
        return (
            "they get the same vector (up to float rounding between encoder batches) and their SIDs are set apart only "
            "by collision resolution"
        )
    return (
        "they get the same text vector (up to float rounding between encoder batches), and only their collaborative "
        "or extra part, where it differs, sets them apart before collision resolution"
    )


def _oversized_note(n_items: int, sizes: list[int]) -> str | None:
    """With ``auto_scale`` off: a note when a level has more codes than there are items (its extra codes can
    never be any item's, yet each is a token the LM carries)."""
    unused = sum(max(0, s - n_items) for s in sizes)
    if not unused:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        auto = effective_codebook_sizes(n_items, sizes, True)
    return (
        f"codebook sizes {sizes} exceed the {n_items} items (sid.quantizer.auto_scale: false): at least {unused:,} "
        f"SID tokens can never name an item; auto_scale would use {auto}"
    )


def _finite_or_none(x: float) -> float | None:
    """A statistic for ``stats.json``: NaN is not JSON (``jq`` and browsers refuse the file), null is."""
    return x if math.isfinite(x) else None
