"""Skip-gram with negative sampling (word2vec, Mikolov et al. 2013) from scratch: frequent-word subsampling,
the unigram^0.75 noise distribution, skip-gram pairs with the dynamic window, the SGNS loss and model, and
word2vec's batched SGD update and schedule."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lmcourse.embeddings.data import EncodedCorpus, Vocab
from lmcourse.embeddings.training import TrainResult, progress_bar
from lmcourse.errors import ArgumentError, LmcourseError, UnknownNameError
from lmcourse.measurement import synchronize
from lmcourse.tensorboard_logs import scalar_writer

if TYPE_CHECKING:
    from lmcourse.context import RunContext


def keep_probabilities(counts: np.ndarray, sample: float = 1e-3, variant: str = "word2vec") -> np.ndarray:
    """Probability of keeping each occurrence of a word, with f = count / total and t = ``sample``.

    - ``"word2vec"`` (the C tool and gensim's ``sample``): p = (sqrt(f/t) + 1) * t/f, capped at 1;
    - ``"paper"`` (Mikolov et al. 2013, eq. 5, as a keep probability): p = sqrt(t/f), capped at 1.
    ``sample=0`` keeps everything.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if sample <= 0:
        return np.ones_like(counts)
    f = counts / counts.sum()
    if variant == "word2vec":
        p = (np.sqrt(f / sample) + 1.0) * sample / f
    elif variant == "paper":
        p = np.sqrt(sample / f)
    else:
        raise UnknownNameError(f"unknown subsampling variant {variant!r}; use 'word2vec' or 'paper'")
    return np.minimum(p, 1.0)


def noise_distribution(counts: np.ndarray, power: float = 0.75) -> np.ndarray:
    """Negative-sampling distribution: unigram counts raised to ``power`` (3/4 in word2vec), normalised."""
    w = np.asarray(counts, dtype=np.float64) ** power
    return w / w.sum()


def subsample(corpus: EncodedCorpus, keep_prob: np.ndarray, rng: np.random.Generator) -> EncodedCorpus:
    """Drop each token independently with probability 1 - keep_prob[word] (done afresh every epoch)."""
    keep = rng.random(len(corpus.ids)) < keep_prob[corpus.ids]
    return EncodedCorpus(corpus.ids[keep], corpus.sentence[keep], corpus.raw_words)


def skipgram_pairs(ids: np.ndarray, sentence: np.ndarray, window: int,
                   effective: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(center, context) id pairs for every token and every context within its window.

    ``effective[i]`` is the window used around token i (word2vec draws it uniformly from 1..window,
    the "dynamic window" that weights near words more); ``None`` uses the full ``window``. Pairs never
    cross a sentence boundary. Order: offset d = 1..window, for each d first (i, i+d) then (i+d, i).
    """
    if window < 1:
        raise ArgumentError(f"window must be >= 1, got {window}")
    ids = np.asarray(ids)
    sentence = np.asarray(sentence)
    eff = np.full(len(ids), window) if effective is None else np.asarray(effective)
    centers, contexts = [], []
    for d in range(1, window + 1):
        same = sentence[:-d] == sentence[d:]
        left = same & (eff[:-d] >= d)  # center i, context i + d
        right = same & (eff[d:] >= d)  # center i + d, context i
        centers += [ids[:-d][left], ids[d:][right]]
        contexts += [ids[d:][left], ids[:-d][right]]
    if not centers:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(centers), np.concatenate(contexts)


def sgns_loss(center: torch.Tensor, context: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Per-pair negative-sampling loss  -log σ(u·v) - Σ_k log σ(-u·n_k).

    ``center`` [B, d] (input vectors), ``context`` [B, d] and ``negatives`` [B, K, d] (output vectors).
    """
    pos = (center * context).sum(-1)
    neg = torch.bmm(negatives, center.unsqueeze(-1)).squeeze(-1)
    return -(F.logsigmoid(pos) + F.logsigmoid(-neg).sum(-1))


class SkipGramNS(nn.Module):
    """Two embedding tables: input vectors (the word vectors we keep) and output (context) vectors.

    Initialised as word2vec: inputs uniform in ±0.5/d, outputs zero. ``sparse=True`` makes backward
    touch only the rows in the batch, which is what makes large vocabularies cheap.
    """

    def __init__(self, vocab_size: int, dim: int, sparse: bool = True) -> None:
        super().__init__()
        self.inp = nn.Embedding(vocab_size, dim, sparse=sparse)
        self.out = nn.Embedding(vocab_size, dim, sparse=sparse)
        nn.init.uniform_(self.inp.weight, -0.5 / dim, 0.5 / dim)
        nn.init.zeros_(self.out.weight)

    def forward(self, center: torch.Tensor, context: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """Mean SGNS loss of a batch of (center, context) ids with [B, K] negative ids."""
        return sgns_loss(self.inp(center), self.out(context), self.out(negatives)).mean()

    def vectors(self) -> np.ndarray:
        return self.inp.weight.detach().cpu().numpy().copy()


@torch.no_grad()
def sgns_sgd_step(w_in: torch.Tensor, w_out: torch.Tensor, center: torch.Tensor, context: torch.Tensor,
                  negatives: torch.Tensor, lr: float) -> float:
    """One batched word2vec update, in place: plain SGD on the *summed* SGNS loss of the batch.

    With s = σ(u·v) and t_k = σ(u·n_k) the gradients are  ∂L/∂u = (s-1) v + Σ_k t_k n_k,
    ∂L/∂v = (s-1) u,  ∂L/∂n_k = t_k u. Writing them by hand and scattering with ``index_add_`` skips
    autograd and optimiser state: only the rows in the batch are read and written, like word2vec's
    per-pair updates but a few thousand pairs at a time. Returns the summed loss before the update.
    """
    b, k = negatives.shape
    u, v = w_in.index_select(0, center), w_out.index_select(0, context)  # [B,d], [B,d]
    n = w_out.index_select(0, negatives.reshape(-1)).view(b, k, -1)  # [B,K,d]
    pos = (u * v).sum(-1)
    neg = torch.bmm(n, u.unsqueeze(-1)).squeeze(-1)
    g_pos = torch.sigmoid(pos) - 1.0  # ∂L/∂(u·v)
    g_neg = torch.sigmoid(neg)  # ∂L/∂(u·n_k)
    grad_u = g_pos.unsqueeze(-1) * v + torch.bmm(g_neg.unsqueeze(1), n).squeeze(1)
    w_out.index_add_(0, context, g_pos.unsqueeze(-1) * u, alpha=-lr)
    w_out.index_add_(0, negatives.reshape(-1), (g_neg.unsqueeze(-1) * u.unsqueeze(1)).view(b * k, -1), alpha=-lr)
    w_in.index_add_(0, center, grad_u, alpha=-lr)
    return float(-(F.logsigmoid(pos).sum() + F.logsigmoid(-neg).sum()))


def train_sgns(corpus: EncodedCorpus, vocab: Vocab, ctx: RunContext, dim: int = 100, window: int = 5,
               negative: int = 5, epochs: int = 5, sample: float = 1e-3, batch_size: int = 4096, lr: float = 0.025,
               min_lr: float = 1e-4, dynamic_window: bool = True, progress: bool = True,
               tensorboard: str | None = "sgns") -> TrainResult:
    """Skip-gram with negative sampling, batched: per epoch subsample, build all pairs, shuffle, step.

    Updates are word2vec's SGD (:func:`sgns_sgd_step`) with its schedule: the rate decays linearly
    from ``lr`` to ``min_lr`` over training. Negatives are drawn from unigram^0.75 for every pair.
    The run context fixes the randomness (``ctx.seed``: the initial vectors, subsampling, windows,
    shuffles and negatives) and where the vectors live and are updated (``ctx.device``); the random
    draws are made on the CPU, so a seed gives the same draws on every device. The loss curve, learning
    rate and pairs/s go to TensorBoard events under the run folder (``tensorboard=None``: none).
    """
    if len(corpus.ids) == 0:
        raise LmcourseError("train_sgns: empty corpus")
    device = ctx.device
    gen = ctx.generator()
    rng = np.random.default_rng(ctx.seed)
    with ctx.seeded():
        model = SkipGramNS(len(vocab), dim, sparse=False)
    model.to(device)
    w_in, w_out = model.inp.weight.data, model.out.weight.data
    keep = keep_probabilities(vocab.counts, sample)
    cdf = torch.from_numpy(np.cumsum(noise_distribution(vocab.counts))).float()
    cdf[-1] = 1.0 + 1e-6  # so that searchsorted never returns len(vocab)
    cdf = cdf.to(device)
    # the decay runs over the expected number of pairs (dynamic window: (window+1)/2 per side on average)
    exp_pairs = float(keep[corpus.ids].sum()) * (window + 1 if dynamic_window else 2 * window)
    total_pairs = max(1.0, epochs * exp_pairs)
    losses: list[float] = []
    curve: list[tuple[int, float]] = []  # (pairs seen, mean loss since the last point), ~50 points per run
    every = max(1, int(total_pairs / batch_size / 50))
    done, steps, window_loss, window_pairs = 0, 0, 0.0, 0
    writer = scalar_writer(ctx, tensorboard) if tensorboard else None
    start = time.perf_counter()
    for epoch in range(epochs):
        sub = subsample(corpus, keep, rng)
        eff = rng.integers(1, window + 1, size=len(sub.ids)) if dynamic_window else None
        c, o = skipgram_pairs(sub.ids, sub.sentence, window, eff)
        perm = torch.from_numpy(rng.permutation(len(c)))
        c_t, o_t = torch.from_numpy(c)[perm].to(device), torch.from_numpy(o)[perm].to(device)
        total = 0.0
        bar = progress_bar(len(c), f"SGNS epoch {epoch + 1}/{epochs}", progress)
        for s in range(0, len(c), batch_size):
            cb, ob = c_t[s:s + batch_size], o_t[s:s + batch_size]
            draws = torch.rand(len(cb) * negative, generator=gen).to(device)
            neg = torch.searchsorted(cdf, draws).view(len(cb), negative)
            rate = max(min_lr, lr - (lr - min_lr) * done / total_pairs)
            batch_loss = sgns_sgd_step(w_in, w_out, cb, ob, neg, rate)
            total += batch_loss
            done += len(cb)
            steps += 1
            window_loss, window_pairs = window_loss + batch_loss, window_pairs + len(cb)
            if steps % every == 0:
                curve.append((done, window_loss / window_pairs))
                if writer is not None:  # x axis: training pairs seen
                    writer.add_scalar("train/loss", curve[-1][1], done)
                    writer.add_scalar("train/lr", rate, done)
                    writer.add_scalar("train/pairs_per_s", done / max(time.perf_counter() - start, 1e-9), done)
                window_loss, window_pairs = 0.0, 0
            bar.update(len(cb))
        bar.close()
        losses.append(total / max(len(c), 1))
        if writer is not None:
            writer.add_scalar("epoch/loss", losses[-1], epoch + 1)
    synchronize(device)
    seconds = time.perf_counter() - start
    extra: dict[str, Any] = {"curve": curve, "device": str(device)}
    if writer is not None:
        writer.close()
        extra["tensorboard_dir"] = str(writer.log_dir)
    return TrainResult(model.vectors(), losses, seconds, corpus.raw_words, epochs, done, extra=extra)
