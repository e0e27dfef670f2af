"""GloVe (Pennington et al. 2014) from scratch: distance-weighted co-occurrence counts, the weighted
least-squares loss with f(x) = min(1, (x/x_max)^alpha), AdaGrad, and word vectors W + W~."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from lmcourse.embeddings.data import EncodedCorpus
from lmcourse.embeddings.training import TrainResult, progress_bar
from lmcourse.errors import ArgumentError, LmcourseError
from lmcourse.measurement import synchronize
from lmcourse.tensorboard_logs import scalar_writer

if TYPE_CHECKING:
    from lmcourse.context import RunContext


@dataclass
class Cooccurrence:
    """Sparse symmetric co-occurrence counts X_ij (COO, summed duplicates)."""

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    vocab_size: int

    def dense(self) -> np.ndarray:
        m = np.zeros((self.vocab_size, self.vocab_size))
        np.add.at(m, (self.rows, self.cols), self.values)
        return m


def cooccurrence(corpus: EncodedCorpus, vocab_size: int, window: int = 10, distance_weighting: bool = True
                 ) -> Cooccurrence:
    """X_ij = Σ over occurrences of j within ``window`` words of i of 1/distance (GloVe), symmetric."""
    from scipy import sparse

    if window < 1:
        raise ArgumentError(f"window must be >= 1, got {window}")
    ids, sent = corpus.ids, corpus.sentence
    rows, cols, vals = [], [], []
    for d in range(1, window + 1):
        same = sent[:-d] == sent[d:]
        a, b = ids[:-d][same], ids[d:][same]
        w = np.full(len(a), 1.0 / d if distance_weighting else 1.0)
        rows += [a, b]
        cols += [b, a]
        vals += [w, w]
    m = sparse.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(vocab_size, vocab_size)).tocsr().tocoo()  # tocsr sums duplicates
    return Cooccurrence(m.row.astype(np.int64), m.col.astype(np.int64), m.data.astype(np.float64), vocab_size)


def glove_weight(x: torch.Tensor, x_max: float = 100.0, alpha: float = 0.75) -> torch.Tensor:
    """f(x) = (x/x_max)^alpha for x < x_max, else 1: rare pairs count less, frequent ones are capped."""
    return torch.clamp(x / x_max, max=1.0) ** alpha


def glove_loss(w_i: torch.Tensor, w_j: torch.Tensor, b_i: torch.Tensor, b_j: torch.Tensor, x: torch.Tensor,
               x_max: float = 100.0, alpha: float = 0.75) -> torch.Tensor:
    """Per-entry  f(X_ij) (w_i·w~_j + b_i + b~_j - log X_ij)^2."""
    diff = (w_i * w_j).sum(-1) + b_i + b_j - torch.log(x)
    return glove_weight(x, x_max, alpha) * diff**2


class GloVe(nn.Module):
    """Word vectors W, context vectors W~ and their biases; the kept vectors are W + W~."""

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.w = nn.Embedding(vocab_size, dim)
        self.wt = nn.Embedding(vocab_size, dim)
        self.b = nn.Embedding(vocab_size, 1)
        self.bt = nn.Embedding(vocab_size, 1)
        for emb in (self.w, self.wt):
            nn.init.uniform_(emb.weight, -0.5 / dim, 0.5 / dim)
        nn.init.zeros_(self.b.weight)
        nn.init.zeros_(self.bt.weight)

    def forward(self, i: torch.Tensor, j: torch.Tensor, x: torch.Tensor, x_max: float = 100.0,
                alpha: float = 0.75) -> torch.Tensor:
        """Sum of the weighted squared errors of a batch of non-zero entries (i, j, X_ij)."""
        return glove_loss(self.w(i), self.wt(j), self.b(i).squeeze(-1), self.bt(j).squeeze(-1), x, x_max,
                          alpha).sum()

    def vectors(self) -> np.ndarray:
        return (self.w.weight + self.wt.weight).detach().cpu().numpy().copy()


def train_glove(cooc: Cooccurrence, ctx: RunContext, dim: int = 100, epochs: int = 20, batch_size: int = 16384,
                lr: float = 0.05, x_max: float = 100.0, alpha: float = 0.75, progress: bool = True,
                raw_words: int = 0, tensorboard: str | None = "glove") -> TrainResult:
    """AdaGrad (as in the paper, initial rate 0.05) over shuffled batches of the non-zero X_ij.

    ``ctx.seed`` fixes the initial vectors and the shuffles (drawn on the CPU), ``ctx.device`` is where
    the model and the co-occurrence entries live. The per-epoch loss and entries/s go to TensorBoard
    events under the run folder (``tensorboard=None``: none).
    """
    if len(cooc.values) == 0:
        raise LmcourseError("train_glove: the co-occurrence matrix is empty")
    device = ctx.device
    gen = ctx.generator()
    with ctx.seeded():
        model = GloVe(cooc.vocab_size, dim)
    model.to(device)
    opt = torch.optim.Adagrad(model.parameters(), lr=lr)
    i_all, j_all = torch.from_numpy(cooc.rows).to(device), torch.from_numpy(cooc.cols).to(device)
    x_all = torch.from_numpy(cooc.values).float().to(device)
    n = len(x_all)
    losses = []
    writer = scalar_writer(ctx, tensorboard) if tensorboard else None
    start = time.perf_counter()
    bar = progress_bar(epochs, "GloVe epochs", progress)
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen).to(device)
        total = 0.0
        for s in range(0, n, batch_size):
            idx = perm[s:s + batch_size]
            loss = model(i_all[idx], j_all[idx], x_all[idx], x_max, alpha)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
        losses.append(total / n)
        if writer is not None:
            writer.add_scalar("train/loss", losses[-1], epoch + 1)
            writer.add_scalar("train/entries_per_s", n * (epoch + 1) / max(time.perf_counter() - start, 1e-9),
                              epoch + 1)
        bar.update(1)
    bar.close()
    synchronize(device)
    extra: dict[str, Any] = {"nonzeros": n, "device": str(device)}
    if writer is not None:
        writer.close()
        extra["tensorboard_dir"] = str(writer.log_dir)
    return TrainResult(model.vectors(), losses, time.perf_counter() - start, raw_words, epochs, extra=extra)
