"""RQ-VAE: an MLP autoencoder whose latent is quantized by L residual codebooks.

Item vector ``x`` -> encoder -> latent ``z``; level 0 picks the codeword nearest to ``z``, level
``l`` the codeword nearest to what the previous levels left unexplained (the residual). The decoder
reconstructs ``x`` from the sum of the chosen codewords. Losses (VQ-VAE style):

* reconstruction ``||x - dec(z_q)||^2`` (straight-through gradient through the quantizer);
* codebook ``||sg(r_l) - e_l||^2`` pulls codewords toward the residuals that chose them;
* commitment ``beta * ||r_l - sg(e_l)||^2`` keeps the encoder close to its codewords.

Codebooks are initialised by k-means on the residuals of a seeded sample of items (random init
leaves most codes dead), and codes no item uses are periodically re-seeded from current residuals
(dead-code reset), so that the LLM vocabulary is not wasted on never-used tokens. Everything is
seeded; on a fixed thread count the same data and seed give the same codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from rich.progress import Progress
from torch import nn

from conrec.sid.config import QuantizerConfig
from conrec.sid.quantize_result import QuantizeResult, reconstruction_errors
from conrec.sid.rkmeans import kmeans


def _mlp(dims: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class RqVae(nn.Module):
    """MLP encoder/decoder with residual vector quantization of the latent."""

    def __init__(self, in_dim: int, hidden_dims: Sequence[int], latent_dim: int, codebook_sizes: Sequence[int]):
        super().__init__()
        self.in_dim = in_dim
        self.latent_dim = latent_dim
        self.codebook_sizes = [int(k) for k in codebook_sizes]
        self.encoder = _mlp([in_dim, *hidden_dims, latent_dim])
        self.decoder = _mlp([latent_dim, *reversed(list(hidden_dims)), in_dim])
        self.codebooks = nn.ParameterList(
            [nn.Parameter(torch.randn(k, latent_dim) * 0.01) for k in self.codebook_sizes]
        )

    def quantize(self, z: torch.Tensor) -> dict[str, Any]:
        """Residual quantization of latents ``z`` (B, d): codes, quantized latent, VQ losses."""
        residual = z
        z_q = torch.zeros_like(z)
        codes, residuals = [], []
        codebook_loss = z.new_zeros(())
        commit_loss = z.new_zeros(())
        for book in self.codebooks:
            residuals.append(residual)
            dist = torch.cdist(residual.detach(), book.detach()).pow(2)
            idx = dist.argmin(dim=1)
            e = book[idx]
            codebook_loss = codebook_loss + (residual.detach() - e).pow(2).sum(1).mean()
            commit_loss = commit_loss + (residual - e.detach()).pow(2).sum(1).mean()
            z_q = z_q + e
            residual = residual - e.detach()
            codes.append(idx)
        return {
            "codes": torch.stack(codes, dim=1),
            "z_q": z_q,
            "residuals": residuals,
            "codebook_loss": codebook_loss,
            "commit_loss": commit_loss,
        }

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        z = self.encoder(x)
        q = self.quantize(z)
        z_st = z + (q["z_q"] - z).detach()  # straight-through estimator
        q["x_hat"] = self.decoder(z_st)
        q["recon_loss"] = (x - q["x_hat"]).pow(2).sum(1).mean()
        return q

    @torch.no_grad()
    def encode_codes(self, x: torch.Tensor) -> torch.Tensor:
        """Codes (B, L) of item vectors under the trained codebooks (tests check a reloaded state gives the
        training codes; no command adds new items to an existing SID map)."""
        return self.quantize(self.encoder(x))["codes"]


def _init_codebooks(model: RqVae, x: torch.Tensor, seed: int, niter: int) -> None:
    with torch.no_grad():
        residual = model.encoder(x)
        for level, book in enumerate(model.codebooks):
            centroids = torch.from_numpy(kmeans(residual.numpy(), book.shape[0], seed=seed + level, niter=niter))
            book.copy_(centroids)
            idx = torch.cdist(residual, book).argmin(dim=1)
            residual = residual - book[idx]


def _reset_dead_codes(
    model: RqVae, x: torch.Tensor, optimizer: torch.optim.Optimizer, gen: torch.Generator
) -> int:
    """Re-seed every unused code with a random current residual of its level; return how many."""
    n_reset = 0
    with torch.no_grad():
        residual = model.encoder(x)
        for book in model.codebooks:
            idx = torch.cdist(residual, book).argmin(dim=1)
            used = torch.bincount(idx, minlength=book.shape[0]) > 0
            dead = torch.nonzero(~used).flatten()
            if len(dead):
                pick = torch.randperm(len(residual), generator=gen)[: len(dead)]
                if len(pick) < len(dead):  # fewer residuals than dead codes (tiny catalogue)
                    pick = pick[torch.arange(len(dead)) % len(pick)]
                book[dead] = residual[pick] + 1e-4 * torch.randn(len(dead), book.shape[1], generator=gen)
                state = optimizer.state.get(book, {})
                for key in ("exp_avg", "exp_avg_sq"):
                    if key in state:
                        state[key][dead] = 0
                n_reset += len(dead)
                idx = torch.cdist(residual, book).argmin(dim=1)
            residual = residual - book[idx]
    return n_reset


def fit_rqvae(
    x: np.ndarray,
    codebook_sizes: Sequence[int],
    cfg: QuantizerConfig,
    seed: int,
    progress: Progress | None = None,
) -> tuple[RqVae, QuantizeResult]:
    """Train an RQ-VAE on item vectors ``x`` (n_items, dim); return it and the codes of every item."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    n = len(xt)
    model = RqVae(xt.shape[1], cfg.hidden_dims, cfg.latent_dim, codebook_sizes)
    init_rows = torch.randperm(n, generator=gen)[: cfg.kmeans_init_samples]
    _init_codebooks(model, xt[init_rows], seed, cfg.kmeans_iters)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    batch = min(cfg.batch_size, n)
    steps_per_epoch = (n + batch - 1) // batch
    epochs = cfg.epochs
    if cfg.max_steps is not None:
        epochs = max(1, min(epochs, cfg.max_steps // steps_per_epoch))
    reset_until = int(epochs * 0.8)
    task = progress.add_task("RQ-VAE training", total=epochs) if progress else None
    history: list[dict[str, float]] = []
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)
        sums = {"recon": 0.0, "codebook": 0.0, "commit": 0.0}
        for start in range(0, n, batch):
            xb = xt[perm[start : start + batch]]
            out = model(xb)
            loss = out["recon_loss"] + out["codebook_loss"] + cfg.commitment_beta * out["commit_loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            w = len(xb) / n
            sums["recon"] += out["recon_loss"].item() * w
            sums["codebook"] += out["codebook_loss"].item() * w
            sums["commit"] += out["commit_loss"].item() * w
        reset = 0
        if cfg.dead_code_reset_every and (epoch + 1) % cfg.dead_code_reset_every == 0 and epoch + 1 < reset_until:
            reset = _reset_dead_codes(model, xt, optimizer, gen)
        history.append({"epoch": epoch, **sums, "dead_codes_reset": reset})
        if progress is not None and task is not None:
            progress.update(task, advance=1, description=f"RQ-VAE training (recon {sums['recon']:.4f})")

    model.eval()
    with torch.no_grad():
        out = model(xt)
    mse, rel = reconstruction_errors(x.astype(np.float32), out["x_hat"].numpy())
    result = QuantizeResult(
        codes=out["codes"].numpy().astype(np.int64),
        codebook_sizes=model.codebook_sizes,
        last_residual=out["residuals"][-1].numpy(),
        last_codebook=model.codebooks[-1].detach().numpy().copy(),
        recon_mse=mse,
        recon_rel=rel,
        state={
            "kind": "rqvae",
            "in_dim": model.in_dim,
            "hidden_dims": list(cfg.hidden_dims),
            "latent_dim": model.latent_dim,
            "codebook_sizes": model.codebook_sizes,
            "state_dict": model.state_dict(),
        },
        history=history,
    )
    return model, result


def load_rqvae(state: dict[str, Any]) -> RqVae:
    """Rebuild a trained RQ-VAE from the ``state`` stored in quantizer.pt."""
    model = RqVae(state["in_dim"], state["hidden_dims"], state["latent_dim"], state["codebook_sizes"])
    model.load_state_dict(state["state_dict"])
    model.eval()
    return model
