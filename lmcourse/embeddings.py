"""Static word embeddings from scratch: skip-gram with negative sampling (word2vec) and GloVe.

Everything a chapter on word vectors needs, small enough to read:

- a vocabulary builder (``min_count``, ``max_size``, most frequent first) and a tokenizer;
- frequent-word subsampling (Mikolov et al. 2013) in the two published variants, and the
  unigram^0.75 noise distribution of negative sampling;
- skip-gram pair generation with word2vec's dynamic ("reduced") window, vectorised over a whole corpus;
- the SGNS model and loss in PyTorch, trained in large shuffled batches with sparse gradients;
- GloVe (Pennington et al. 2014): distance-weighted co-occurrence counts, the weighted least-squares
  loss with f(x) = min(1, (x/x_max)^alpha), AdaGrad, and word vectors W + W~;
- an evaluation that wraps *our* vectors as gensim ``KeyedVectors``, so WordSim-353, SimLex-999 and the
  Google analogies are scored by exactly the code that scores gensim's own ``Word2Vec``, and an independent
  Spearman (NumPy cosines, scipy) that checks the wrapping and gensim's reading of the pair files;
- both skip-grams trained once per seed (:func:`sgns_over_seeds`) and a random-vector floor
  (:func:`random_baseline`), one row per run, for :mod:`lmcourse.spread`'s mean ± std and comparisons.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lmcourse.errors import ArgumentError, LmcourseError, UnknownNameError
from lmcourse.measurement import synchronize
from lmcourse.tensorboard_logs import scalar_writer

if TYPE_CHECKING:
    from lmcourse.context import RunContext
    from lmcourse.profiles import Profile


# ------------------------------------------------------------------------------------------- sizes
@dataclass(frozen=True)
class EmbeddingSizes:
    """Data and training sizes of the word-embedding chapter for one profile (its ``embeddings`` section:
    :meth:`from_profile`); fields a profile leaves out keep word2vec's / GloVe's defaults."""

    wikitext_splits: tuple[str, ...]  # load_corpus("wikitext-2", split) for each
    glue_tasks: tuple[str, ...]  # training sentences of these GLUE tasks are added to the corpus
    dim: int
    epochs: int
    min_count: int = 5
    max_vocab: int | None = None
    window: int = 5
    negative: int = 5
    sample: float = 1e-3
    batch_size: int = 4096
    lr: float = 0.025
    glove_window: int = 10
    glove_epochs: int = 20
    glove_batch_size: int = 16384
    glove_lr: float = 0.05
    x_max: float = 100.0
    alpha: float = 0.75
    seeds: tuple[int, ...] = (0,)  # the comparison of the two skip-grams runs once per seed (mean ± std)

    @classmethod
    def from_profile(cls, profile: str | Profile | None = None) -> EmbeddingSizes:
        """The sizes of a profile's ``embeddings`` section (a :class:`~lmcourse.profiles.Profile` or its name;
        ``None``: ``$LMCOURSE_PROFILE``). Unknown names and unknown section keys are clear errors."""
        from lmcourse.profiles import get_profile

        section = get_profile(profile).embeddings
        unknown = sorted(set(section) - set(cls.__dataclass_fields__))
        if unknown:
            raise ArgumentError(f"unknown word-embedding size(s) {unknown} in the profile; known: "
                            f"{sorted(cls.__dataclass_fields__)}")
        return cls(**section)


# ------------------------------------------------------------------------------------------- corpus
_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?|[0-9]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased words and numbers; punctuation and wikitext's ``<unk>`` markers are dropped."""
    return _TOKEN.findall(text.lower().replace("<unk>", " "))


def load_sentences(sizes: EmbeddingSizes, source: Any = None) -> list[list[str]]:
    """Tokenised non-empty lines of wikitext-2 (the splits in ``sizes``) plus GLUE training sentences."""
    from lmcourse.data import get_task, load_corpus, load_glue

    sentences: list[list[str]] = []
    for split in sizes.wikitext_splits:
        for line in load_corpus("wikitext-2", split, source=source)["text"]:
            toks = tokenize(line)
            if len(toks) > 1:
                sentences.append(toks)
    for task in sizes.glue_tasks:
        ds = load_glue(task, "train")
        for col in get_task(task).input_columns:
            sentences.extend(t for t in (tokenize(x) for x in ds[col]) if len(t) > 1)
    return sentences


@dataclass
class Vocab:
    """Words sorted by descending count (ties: first occurrence), their counts and an index."""

    words: list[str]
    counts: np.ndarray
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self.index

    def id(self, word: str) -> int:
        """The index of ``word``; a clear error for a word that is not in the vocabulary."""
        try:
            return self.index[word]
        except KeyError:
            raise UnknownNameError(f"{word!r} is not in the vocabulary ({len(self)} words); "
                                   "check `word in vocab` first") from None

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Token ids; unknown words are dropped, as word2vec does (they never enter a window)."""
        idx = self.index
        return [idx[t] for t in tokens if t in idx]


def build_vocab(sentences: Iterable[Sequence[str]], min_count: int = 5, max_size: int | None = None) -> Vocab:
    """Count words; keep those seen ``min_count`` times, most frequent first, at most ``max_size`` of them."""
    if min_count < 1:
        raise ArgumentError(f"min_count must be >= 1, got {min_count}")
    counter: Counter[str] = Counter()
    for s in sentences:
        counter.update(s)
    if not counter:
        raise LmcourseError("build_vocab: the corpus is empty (no tokens); check the data loading/tokenizer")
    # Counter keeps first-occurrence order, and sorted() is stable: ties stay in order of appearance
    items = sorted(((w, c) for w, c in counter.items() if c >= min_count), key=lambda wc: -wc[1])
    if max_size is not None:
        items = items[:max_size]
    if not items:
        raise LmcourseError(f"build_vocab: no word occurs at least min_count={min_count} times "
                            f"({len(counter)} distinct words); lower min_count or use more text")
    return Vocab([w for w, _ in items], np.array([c for _, c in items], dtype=np.int64))


@dataclass
class EncodedCorpus:
    """All sentences as one id array plus, for every token, the sentence it belongs to."""

    ids: np.ndarray  # int64 [n_tokens]
    sentence: np.ndarray  # int64 [n_tokens], non-decreasing
    raw_words: int  # tokens before dropping out-of-vocabulary words (what word2vec counts as "words")


def encode_corpus(sentences: Sequence[Sequence[str]], vocab: Vocab) -> EncodedCorpus:
    """Encode every sentence (OOV dropped) into flat arrays; windows never cross sentence boundaries."""
    ids: list[int] = []
    sent: list[int] = []
    raw = 0
    for k, s in enumerate(sentences):
        raw += len(s)
        enc = vocab.encode(s)
        ids.extend(enc)
        sent.extend([k] * len(enc))
    if not ids:
        raise LmcourseError("encode_corpus: no in-vocabulary tokens; is the corpus empty?")
    return EncodedCorpus(np.asarray(ids, dtype=np.int64), np.asarray(sent, dtype=np.int64), raw)


# ------------------------------------------------------------------------------- subsampling, noise
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


# ------------------------------------------------------------------------------------------- SGNS
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


@dataclass
class TrainResult:
    """What a training run produced: vectors, per-epoch mean loss and honest throughput."""

    vectors: np.ndarray
    losses: list[float]
    seconds: float
    raw_words: int  # corpus tokens per epoch before subsampling, x epochs = words processed
    epochs: int
    pairs: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def words_per_second(self) -> float:
        return self.raw_words * self.epochs / max(self.seconds, 1e-9)


def _progress(total: int, desc: str, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not show, leave=False, mininterval=1.0)


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
        bar = _progress(len(c), f"SGNS epoch {epoch + 1}/{epochs}", progress)
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


def train_gensim(sentences: Sequence[Sequence[str]], ctx: RunContext, dim: int = 100, window: int = 5,
                 negative: int = 5, epochs: int = 5, sample: float = 1e-3, min_count: int = 5,
                 max_vocab: int | None = None, workers: int | None = None):
    """gensim's skip-gram (sg=1, negative sampling, no hierarchical softmax) on the same sentences.

    Returns ``(model, TrainResult)``; the time counts ``train()`` only (vocabulary building excluded, as
    for ours). Seeded with ``ctx.seed``; ``workers`` defaults to ``ctx.threads``, the CPU threads torch
    uses in this run, so both implementations use the same cores.
    """
    from gensim.models import Word2Vec

    workers = workers or ctx.threads
    model = Word2Vec(vector_size=dim, window=window, negative=negative, hs=0, sg=1, sample=sample,
                     min_count=min_count, max_final_vocab=max_vocab, workers=workers, seed=ctx.seed, epochs=epochs)
    model.build_vocab(sentences)
    start = time.perf_counter()
    model.train(sentences, total_examples=model.corpus_count, epochs=epochs)
    seconds = time.perf_counter() - start
    raw = sum(len(s) for s in sentences)
    losses: list[float] = []
    return model, TrainResult(model.wv.vectors.copy(), losses, seconds, raw, epochs,
                              extra={"workers": workers})


# ------------------------------------------------------------------------------------------- GloVe
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
    bar = _progress(epochs, "GloVe epochs", progress)
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


# ------------------------------------------------------------------------------------------- evaluation
BENCHMARKS = {"wordsim353": "wordsim353.tsv", "simlex999": "simlex999.txt", "analogy": "questions-words.txt"}


def to_keyed_vectors(words: Sequence[str], vectors: np.ndarray):
    """Our vectors as gensim ``KeyedVectors`` (same word order), so gensim's evaluation code scores them."""
    from gensim.models import KeyedVectors

    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(words):
        raise ArgumentError(f"need one vector per word: {len(words)} words, vectors of shape {vectors.shape}")
    kv = KeyedVectors(vectors.shape[1], count=0)
    kv.add_vectors(list(words), vectors)
    return kv


def _analogy_questions(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip() and not line.startswith(":"))


def evaluate_vectors(kv, analogies: bool = True) -> dict[str, float]:
    """WordSim-353 and SimLex-999 Spearman (+ OOV share) and Google analogy accuracy (+ OOV share).

    Exactly gensim's ``evaluate_word_pairs`` / ``evaluate_word_analogies`` (case-insensitive, analogies
    restricted to the 300k most frequent words, out-of-vocabulary pairs/questions skipped).
    """
    from gensim.test.utils import datapath

    gensim_logger = logging.getLogger("gensim")
    level = gensim_logger.level
    gensim_logger.setLevel(logging.ERROR)
    try:
        out: dict[str, float] = {}
        for name in ("wordsim353", "simlex999"):
            pearson, spearman, oov = kv.evaluate_word_pairs(datapath(BENCHMARKS[name]))
            out[f"{name}_spearman"] = float(spearman[0])
            out[f"{name}_pearson"] = float(pearson[0])
            out[f"{name}_oov"] = float(oov) / 100.0
        path = datapath(BENCHMARKS["analogy"])
        if not analogies:
            return out
        score, sections = kv.evaluate_word_analogies(path)
        total = next(s for s in sections if s["section"] == "Total accuracy")
        seen = len(total["correct"]) + len(total["incorrect"])
        out["analogy_accuracy"] = float(score) if seen else 0.0
        out["analogy_oov"] = 1.0 - seen / _analogy_questions(path)
    finally:
        gensim_logger.setLevel(level)
    for k, v in out.items():  # fewer than 3 pairs in vocabulary: gensim returns NaN
        if isinstance(v, float) and math.isnan(v):
            out[k] = 0.0 if k.endswith("_spearman") or k.endswith("_pearson") else v
    return out


def word_pair_spearman(words: Sequence[str], vectors: np.ndarray, name: str = "wordsim353") -> tuple[float, int, int]:
    """Spearman between a benchmark's human ratings and the cosine similarities of ``vectors`` (row i is the
    vector of ``words[i]``), computed directly with NumPy and scipy -- none of gensim's evaluation code.

    Pairs are read as gensim reads them (``#`` lines are comments; ``word<TAB>word<TAB>rating``; words compared
    case-insensitively, the first of several case variants wins) and pairs with an out-of-vocabulary word are
    skipped. Returns ``(spearman, pairs used, pairs in the file)``: a check on :func:`evaluate_vectors`, which
    must agree with it on any vectors it was given through :func:`to_keyed_vectors`."""
    from gensim.test.utils import datapath
    from scipy.stats import spearmanr

    if name not in ("wordsim353", "simlex999"):
        raise UnknownNameError(f"unknown word-pair benchmark {name!r}; use 'wordsim353' or 'simlex999'")
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != len(words):
        raise ArgumentError(f"need one vector per word: {len(words)} words, vectors of shape {x.shape}")
    index: dict[str, int] = {}
    for i, w in enumerate(words):
        index.setdefault(w.lower(), i)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    gold, model, total = [], [], 0
    with open(datapath(BENCHMARKS[name]), encoding="utf-8") as f:
        for line in f:
            if line.startswith("#"):
                continue
            parts = line.rstrip("\n").split("\t")
            try:
                a, b, rating = parts[0].lower(), parts[1].lower(), float(parts[2])
            except (ValueError, IndexError):  # gensim skips a malformed line too
                continue
            if len(parts) != 3:
                continue
            total += 1
            if a in index and b in index:
                gold.append(rating)
                model.append(float(x[index[a]] @ x[index[b]]))
    if len(gold) < 3:
        return 0.0, len(gold), total
    return float(spearmanr(gold, model)[0]), len(gold), total


# ------------------------------------------------------------------------------------------- seeds
OURS_SGNS, GENSIM_SGNS, RANDOM_VECTORS = "ours SGNS (torch)", "gensim SGNS", "random vectors"
#: the scores compared over seeds (keys of :func:`evaluate_vectors`)
SEED_METRICS = ("wordsim353_spearman", "simlex999_spearman", "analogy_accuracy")


def score_row(model: str, seed: int, kv, result: TrainResult | None = None, analogies: bool = True
              ) -> dict[str, Any]:
    """One run as a row for :mod:`lmcourse.spread`: model, seed, the :func:`evaluate_vectors` scores and, for
    a trained model, its training seconds and words/s."""
    row: dict[str, Any] = {"model": model, "seed": seed, **evaluate_vectors(kv, analogies=analogies)}
    if result is not None:
        row.update({"train s": result.seconds, "words/s": result.words_per_second})
    return row


def sgns_over_seeds(sentences: Sequence[Sequence[str]], vocab: Vocab, corpus: EncodedCorpus, ctx: RunContext,
                    sizes: EmbeddingSizes, seeds: Iterable[int], progress: bool = False) -> list[dict[str, Any]]:
    """Our skip-gram (:func:`train_sgns`) and gensim's (:func:`train_gensim`) trained once per seed with the
    sizes of ``sizes``, each run with ``ctx.with_changes(seed=s)`` (the seed is the only thing that changes),
    and scored: rows ``[ours seed s, gensim seed s, ...]`` as :func:`score_row` makes them."""
    rows = []
    for s in seeds:
        run = ctx.with_changes(seed=int(s))
        ours = train_sgns(corpus, vocab, run, dim=sizes.dim, window=sizes.window, negative=sizes.negative,
                          epochs=sizes.epochs, sample=sizes.sample, batch_size=sizes.batch_size, lr=sizes.lr,
                          progress=progress)
        rows.append(score_row(OURS_SGNS, run.seed, to_keyed_vectors(vocab.words, ours.vectors), ours))
        gmodel, gres = train_gensim(sentences, run, dim=sizes.dim, window=sizes.window, negative=sizes.negative,
                                    epochs=sizes.epochs, sample=sizes.sample, min_count=sizes.min_count,
                                    max_vocab=sizes.max_vocab)
        rows.append(score_row(GENSIM_SGNS, run.seed, gmodel.wv, gres))
    return rows


def random_baseline(words: Sequence[str], dim: int, seeds: Iterable[int], analogies: bool = False
                    ) -> list[dict[str, Any]]:
    """The floor a trained model must clear: standard-normal random vectors for the same words, one draw per
    seed (``numpy.random.default_rng(seed)``), scored like the models (word pairs only unless ``analogies``)."""
    return [score_row(RANDOM_VECTORS, int(s), to_keyed_vectors(words, np.random.default_rng(int(s)).normal(
        size=(len(words), dim))), analogies=analogies) for s in seeds]


def nearest_words(kv, words: Sequence[str], topn: int = 5) -> dict[str, list[str]]:
    """The ``topn`` cosine-nearest neighbours of each in-vocabulary word."""
    return {w: [n for n, _ in kv.most_similar(w, topn=topn)] for w in words if w in kv.key_to_index}


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """Project rows onto their first two principal components (centred SVD)."""
    x = np.asarray(vectors, dtype=np.float64)
    x = x - x.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T
