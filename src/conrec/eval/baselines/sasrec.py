"""SASRec on dislike sequences: the standard sequential recommender, trained on the conventional
next-negative objective.

Why it is here: CoNRec argues that next-negative training is misaligned with a user's true negative
preference (the next dislike mostly reflects exposure order). A well-tuned SASRec is the strongest
representative of that objective, so FHR gains over it measure what the future-set objective buys.

Model: item + learned position embeddings, ``layers`` pre-norm causal self-attention blocks, output
logits tied to the item embeddings, full softmax cross-entropy at every position (the catalogue is
small enough on CPU). Input sequences are each user's dislikes before the cut-off, oldest first,
cut into right-padded windows of ``max_len + 1``. Seeded and
CPU-only: the same config and data give the same model.

With no window to train on (no user with 2 dislikes in the fit events) the model is not trained and
scores nothing (0 = no signal: popularity decides), with the reason in ``no_signal``. Before, the
randomly initialised network's logits ranked every sample with a dislike, the same for every grid
point, and that row could even become the best baseline the others were compared with.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import torch
from torch import nn

from conrec.data.schema import DISLIKE
from conrec.errors import require_columns
from conrec.eval.baselines.base import Catalog, DescribedBaseline, EpochHook, NotFittedError, RowHook, histories, recommend_in_chunks
from conrec.eval.config import SasrecConfig


class SasrecNet(nn.Module):
    """Causal transformer over item ids (0 = padding, catalogue index + 1 otherwise)."""

    def __init__(self, n_items: int, cfg: SasrecConfig) -> None:
        super().__init__()
        if cfg.hidden % cfg.heads:
            raise ValueError(f"sasrec.hidden ({cfg.hidden}) must be divisible by sasrec.heads ({cfg.heads})")
        self.heads = cfg.heads
        self.item_emb = nn.Embedding(n_items + 1, cfg.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.hidden)
        self.dropout = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(
            cfg.hidden, cfg.heads, dim_feedforward=cfg.hidden * 2, dropout=cfg.dropout,
            activation="gelu", batch_first=True, norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.hidden)
        nn.init.normal_(self.item_emb.weight, std=0.05)
        nn.init.normal_(self.pos_emb.weight, std=0.05)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, L, H) for right-padded id sequences (B, L).

        Right padding means a causal mask alone keeps every real position away from padding, which
        lets torch use its fused causal attention kernel.
        """
        length = seq.shape[1]
        pos = torch.arange(length, device=seq.device)
        x = self.item_emb(seq) * math.sqrt(self.item_emb.embedding_dim) + self.pos_emb(pos)
        x = self.dropout(x)
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=seq.device)
        return self.norm(self.encoder(x, mask=causal, is_causal=True))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores over real items (index 0, padding, excluded): (..., n_items)."""
        return hidden @ self.item_emb.weight[1:].T


class SasrecRecommender(DescribedBaseline):
    name = "sasrec"

    def __init__(self, cfg: SasrecConfig | None = None, seed: int = 0) -> None:
        self.cfg = cfg or SasrecConfig()
        self.seed = seed
        self._catalog: Catalog | None = None
        self._net: SasrecNet | None = None
        self.loss_history: list[float] = []
        self.no_signal: str | None = None  # why the net was not trained (see conrec.eval.baselines.base.no_signal_reason)
        self.on_epoch: EpochHook | None = None  # told each epoch's mean loss (conrec.eval.baselines.base.watch_epochs)

    def fit(self, events: pl.DataFrame, items: pl.DataFrame) -> None:
        require_columns(events, ("user_id", "item_id", "ts", "feedback"), "events")
        cat = Catalog.build(events, items)
        seqs = _dislike_sequences(events, cat)
        windows = _training_windows(seqs, self.cfg.max_len)
        threads = torch.get_num_threads()
        torch.set_num_threads(min(threads, self.cfg.threads or threads))
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                net = SasrecNet(len(cat.item_ids), self.cfg)
                self.loss_history = self._train(net, windows) if len(windows) else []
        finally:
            torch.set_num_threads(threads)
        net.eval()
        self._net, self._catalog = net, cat
        self.no_signal = None if len(windows) else "no user has 2 dislikes in the fit events (its shortest training sequence): not trained"

    def _train(self, net: SasrecNet, windows: np.ndarray) -> list[float]:
        cfg = self.cfg
        data = torch.from_numpy(windows)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        gen = torch.Generator().manual_seed(self.seed)
        net.train()
        losses: list[float] = []
        lengths = (data > 0).sum(1)
        for epoch in range(1, cfg.epochs + 1):
            total, count = 0.0, 0
            for batch in _length_bucketed_batches(lengths, cfg.batch_size, gen):
                w = data[batch]
                w = w[:, : int(lengths[batch].max())]  # drop columns that are padding everywhere
                inp, tgt = w[:, :-1], w[:, 1:]
                keep = tgt > 0
                h = net(inp)[keep]
                loss = nn.functional.cross_entropy(net.logits(h), tgt[keep] - 1)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * int(keep.sum())
                count += int(keep.sum())
            losses.append(total / max(count, 1))
            if self.on_epoch is not None:  # after the epoch's arithmetic: the model is the same with or without it
                self.on_epoch(epoch, cfg.epochs, losses[-1])
        return losses

    @torch.no_grad()
    def item_scores(self, samples: pl.DataFrame) -> np.ndarray:
        """Next-dislike logits, shifted so the row minimum is 1 (``top_k`` ranks positive scores);
        all zeros for a sample without a known dislike (no sequence to read: popularity decides), and
        for every sample when the net was not trained (its logits would be its random initialisation)."""
        if self._catalog is None or self._net is None:
            raise NotFittedError("sasrec: call fit() before item_scores()")
        cat, net, max_len = self._catalog, self._net, self.cfg.max_len
        hist = histories(samples)
        if self.no_signal is not None:
            return np.zeros((len(hist), len(cat.item_ids)), dtype=np.float64)
        seqs = [[j + 1 for j in cat.encode([i for i, f in zip(items, fb) if f < 0])][-max_len:] for items, fb in hist]
        out = np.zeros((len(hist), len(cat.item_ids)), dtype=np.float64)
        for start in range(0, len(hist), 256):
            chunk = seqs[start : start + 256]
            width = max(1, max(len(s) for s in chunk))
            batch = np.zeros((len(chunk), width), dtype=np.int64)
            for r, s in enumerate(chunk):
                batch[r, : len(s)] = s
            last = torch.tensor([max(len(s) - 1, 0) for s in chunk])
            hidden = net(torch.from_numpy(batch))[torch.arange(len(chunk)), last]
            scores = net.logits(hidden).numpy().astype(np.float64)
            for r, s in enumerate(chunk):
                if s:
                    out[start + r] = scores[r] - scores[r].min() + 1.0
        return out

    def recommend(self, samples: pl.DataFrame, k: int, on_row: RowHook | None = None) -> list[list[str]]:
        if self._catalog is None or self._net is None:
            raise NotFittedError("sasrec: call fit() before recommend()")
        return recommend_in_chunks(self.item_scores, samples, self._catalog, k, on_row)


def _length_bucketed_batches(lengths: torch.Tensor, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Shuffled batches of similar-length windows (most users have few dislikes, so padding every
    batch to ``max_len`` would waste most of the compute). Shuffle, sort within pools of 16 batches,
    cut, shuffle the batch order."""
    perm = torch.randperm(len(lengths), generator=gen)
    batches: list[torch.Tensor] = []
    for pool in perm.split(batch_size * 16):
        pool = pool[torch.argsort(lengths[pool], stable=True)]
        batches.extend(pool.split(batch_size))
    order = torch.randperm(len(batches), generator=gen)
    return [batches[i] for i in order]


def _dislike_sequences(events: pl.DataFrame, cat: Catalog) -> list[list[int]]:
    """Per user, the catalogue ids (+1) of their dislikes ordered by (ts, input row)."""
    neg = (
        events.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String), "ts", "feedback")
        .with_row_index("_row")
        .filter(pl.col("feedback") == DISLIKE)
        .with_columns(pl.col("item_id").replace_strict(cat.index, default=-1, return_dtype=pl.Int64).alias("j"))
        .filter(pl.col("j") >= 0)
        .sort(["user_id", "ts", "_row"])
        .group_by("user_id", maintain_order=True)
        .agg((pl.col("j") + 1).alias("seq"))
    )
    return [s for s in neg["seq"].to_list() if len(s) >= 2]


def _training_windows(seqs: list[list[int]], max_len: int) -> np.ndarray:
    """Right-padded windows of ``max_len + 1`` ids (input = [:-1], target = [1:]), covering each
    sequence from its end backwards so the most recent transitions are always included."""
    rows: list[np.ndarray] = []
    width = max_len + 1
    for s in seqs:
        end = len(s)
        while end >= 2:
            piece = s[max(0, end - width) : end]
            row = np.zeros(width, dtype=np.int64)
            row[: len(piece)] = piece
            rows.append(row)
            end -= max_len
    return np.stack(rows) if rows else np.zeros((0, width), dtype=np.int64)
