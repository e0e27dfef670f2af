"""Reading a frozen or fine-tuned encoder out: one definition of each piece (notebooks 08, 10 and 14).

* :func:`mean_pool`: the mean of the hidden states over the real (non-padding) tokens;
* :func:`load_encoder`: a tokenizer and a bare encoder (no task head) by short name or folder;
* :func:`embed_texts` and :func:`encoder_features`: frozen features, batched by length, in the input order;
* :func:`pair_features`: the two classic sentence-pair combinations, named after where they come from
  (:func:`infersent_pair_features`, :func:`senteval_pair_features`);
* :class:`PooledClassifier`: an encoder, its mean-pooled last hidden states, dropout and one linear layer,
  for a Hugging Face encoder (notebook 14's fine-tuning) as for the course's own GPT, BERT and T5 (notebook 10);
* ONE linear-probe protocol (:func:`fit_probe`): logistic regression whose C is chosen on a fixed grid
  (:data:`PROBE_CS`) by stratified k-fold cross-validation inside the *training* examples, seeded; used by
  the probes on frozen features (:func:`linear_probe`), the few-shot logistic regression
  (:func:`lmcourse.fewshot.fewshot_heads`) and the TF-IDF baseline beside the probes (:func:`tfidf_probe`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from lmcourse.data import get_task
from lmcourse.errors import ArgumentError

if TYPE_CHECKING:
    from lmcourse.context import RunContext


# ------------------------------------------------------------------------------------------ pooling
def mean_pool(hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """The average of the hidden states over the real (unpadded) tokens: ``(batch, seq, d) -> (batch, d)``;
    without a mask, the plain mean over positions.

    This is sentence-transformers' mean pooling (``sum(h * mask) / sum(mask)``). The divisor is clamped at
    1, not at sentence-transformers' 1e-9: a mask of zeros and ones sums to an integer, so every row with a
    real token gets the very same mean either way, and a row of padding alone gets the zero vector (a sum of
    zeros over one) in every dtype, where 1e-9 underflows to 0 in float16 and turns that row into NaN."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def hidden_size(model: nn.Module) -> int:
    """The width of ``model``'s hidden states (``hidden_size``, GPT's ``n_embd`` or T5's ``d_model``)."""
    config = model.config
    for name in ("hidden_size", "n_embd", "d_model"):
        if hasattr(config, name):
            return int(getattr(config, name))
    raise ArgumentError(f"cannot read the hidden size of {type(model).__name__}")


def sequence_hidden(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None,
                    token_type_ids: Tensor | None = None) -> Tensor:
    """The final hidden states ``(B, T, d)`` over the input: a BERT with an MLM head (its encoder), an
    lmcourse GPT (its causal states; padding sits on the right, where no real token can attend to it), an
    lmcourse T5 (its encoder) or a bare Hugging Face encoder (``AutoModel``: its ``last_hidden_state``)."""
    from transformers import PreTrainedModel

    extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
    if hasattr(model, "bert"):
        return model.bert(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
    if hasattr(model, "hidden_states") and hasattr(model, "transformer"):
        return model.hidden_states(input_ids)
    if hasattr(model, "encode"):
        return model.encode(input_ids, torch.ones_like(input_ids) if attention_mask is None else attention_mask)
    if isinstance(model, PreTrainedModel):
        return model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
    raise ArgumentError(f"no readout for {type(model).__name__}; expected a Hugging Face encoder, "
                        "BertForMaskedLM, lmcourse GPT or T5")


class PooledClassifier(nn.Module):
    """An encoder, the mean of its final hidden states over the real tokens, dropout and one linear layer
    (weights normal with std ``initializer_range``, bias zero); ``regression=True`` trains one output by
    mean squared error, otherwise cross-entropy. ``forward`` returns a ``SequenceClassifierOutput``
    (``.loss``, ``.logits``), what the Hugging Face Trainer reads.

    A readout that pretraining does not favour or disfavour: every position's hidden state is trained by
    MLM (a masked position is predicted from it) and by CLM, while ``[CLS]`` is never a target and BERT's
    pooler is not part of ``BertForMaskedLM`` at all. The sentence-embedding MiniLM was itself trained with
    mean pooling. The body is any model :func:`sequence_hidden` reads (``.encoder``; ``.body`` is the same)."""

    def __init__(self, encoder: nn.Module, num_labels: int, dropout: float = 0.1, initializer_range: float = 0.02,
                 *, regression: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = getattr(encoder, "config", None)  # the Trainer reads a few fields of it
        self.num_labels, self.regression = int(num_labels), bool(regression)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size(encoder), self.num_labels)
        nn.init.normal_(self.classifier.weight, std=initializer_range)
        nn.init.zeros_(self.classifier.bias)

    @property
    def body(self) -> nn.Module:
        return self.encoder

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
                labels: Tensor | None = None, **_: Any):
        from transformers.modeling_outputs import SequenceClassifierOutput

        hidden = sequence_hidden(self.encoder, input_ids, attention_mask, token_type_ids)
        logits = self.classifier(self.dropout(mean_pool(hidden.float(), attention_mask)))
        loss = None
        if labels is not None:
            if self.regression:
                loss = nn.functional.mse_loss(logits.squeeze(-1).float(), labels.to(torch.float32))
            else:
                loss = nn.functional.cross_entropy(logits.view(-1, self.num_labels).float(), labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits)


# ------------------------------------------------------------------------------------------ features
def load_encoder(model: str, *, random_init: bool = False, ctx: RunContext | None = None):
    """Tokenizer and bare encoder (``AutoModel``: no task head) of ``model`` (a short name of
    :func:`lmcourse.models.resolve` or a ``save_pretrained`` folder), on the CPU in train mode as loaded;
    ``random_init=True`` builds the same architecture with weights drawn under ``ctx.seeded()``."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from lmcourse.models import resolve

    path = resolve(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if random_init:
        config = AutoConfig.from_pretrained(path)
        if ctx is None:
            return tokenizer, AutoModel.from_config(config)
        with ctx.seeded():
            return tokenizer, AutoModel.from_config(config)
    return tokenizer, AutoModel.from_pretrained(path)


@torch.no_grad()
def embed_texts(encoder: nn.Module, tokenizer, texts: Sequence[str], ctx: RunContext, *, max_length: int,
                batch_size: int = 64, normalize: bool = False, autocast: bool = True, progress: bool = True,
                desc: str = "encode") -> np.ndarray:
    """:func:`mean_pool` of the last hidden states of every text (``float32``, one row per text, in the input
    order), L2-normalised when ``normalize``. The encoder is frozen: moved to ``ctx.device``, put in eval
    mode (no dropout) and run without gradients; texts are cut at ``max_length`` tokens and batched by
    length (stable order), so padding costs little and a text's row depends on the text alone, up to float
    rounding. The passes run under the run context's autocast policy unless ``autocast=False`` (float32)."""
    texts = [str(t) for t in texts]
    encoder = encoder.to(ctx.device).eval()
    out = np.zeros((len(texts), hidden_size(encoder)), dtype=np.float32)
    if not texts:
        return out
    enc = tokenizer(texts, truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    lengths = np.asarray([len(x) for x in enc["input_ids"]])
    order = np.argsort(-lengths, kind="stable")
    pad = int(tokenizer.pad_token_id or 0)
    starts = range(0, len(order), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=desc, leave=False)
    for start in starts:
        idx = order[start:start + batch_size]
        width = int(lengths[idx].max())
        batch = {k: torch.tensor([enc[k][i] + [pad if k == "input_ids" else 0] * (width - len(enc[k][i]))
                                  for i in idx], device=ctx.device) for k in keys}
        with ctx.autocast() if autocast else contextlib.nullcontext():
            hidden = encoder(**batch).last_hidden_state
        pooled = mean_pool(hidden.float(), batch["attention_mask"])
        if normalize:
            pooled = nn.functional.normalize(pooled, dim=-1)
        out[idx] = pooled.cpu().numpy()
    return out


def infersent_pair_features(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``(u, v, |u - v|, u * v)``: InferSent's classifier input for a sentence pair (Conneau et al. 2017,
    "Supervised Learning of Universal Sentence Representations from Natural Language Inference Data", §3.1),
    four times the width of one sentence's vector."""
    return np.concatenate([u, v, np.abs(u - v), u * v], axis=1)


def senteval_pair_features(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``(|u - v|, u * v)``: what SentEval feeds its classifier for MRPC (and SICK-E) (Conneau & Kiela 2018,
    "SentEval: An Evaluation Toolkit for Universal Sentence Representations"), twice the width; the
    features are symmetric in the two sentences."""
    return np.concatenate([np.abs(u - v), u * v], axis=1)


PAIR_FEATURES = {"infersent": infersent_pair_features, "senteval": senteval_pair_features}
"""The named sentence-pair features; ``"infersent"`` is the default of :func:`encoder_features`."""


def pair_features(u: np.ndarray, v: np.ndarray, kind: str = "infersent") -> np.ndarray:
    """The pair features ``kind`` (a key of :data:`PAIR_FEATURES`) of row-aligned sentence vectors."""
    if kind not in PAIR_FEATURES:
        raise ArgumentError(f"unknown pair features {kind!r}; choose one of {', '.join(PAIR_FEATURES)}")
    if np.shape(u) != np.shape(v):
        raise ArgumentError(f"pair features need vectors of the same shape, got {np.shape(u)} and {np.shape(v)}")
    return PAIR_FEATURES[kind](np.asarray(u), np.asarray(v))


def encoder_features(encoder: nn.Module, tokenizer, dataset, task: str, ctx: RunContext, *, max_length: int,
                     batch_size: int = 64, pair: str = "infersent") -> np.ndarray:
    """Frozen mean-pooled features of every example of a GLUE ``dataset`` (:func:`embed_texts`, one row per
    example, in the dataset's order).

    A sentence-pair task encodes each sentence on its own, ``u`` and ``v``, and returns their
    :func:`pair_features` ``pair`` (default InferSent's ``(u, v, |u - v|, u * v)``; ``"senteval"``:
    SentEval's ``(|u - v|, u * v)``). One vector pooled over the joint ``[CLS] a [SEP] b [SEP]`` input would
    leave a linear probe no way to compare the two sentences, and a sentence encoder such as
    all-MiniLM-L6-v2 was trained on separate sentences."""
    spec = get_task(task)
    pooled = [embed_texts(encoder, tokenizer, list(dataset[column]), ctx, max_length=max_length,
                          batch_size=batch_size, desc=f"features {spec.name} {column}")
              for column in spec.input_columns]
    if len(pooled) == 1:
        return pooled[0]
    return pair_features(*pooled, kind=pair)


# ------------------------------------------------------------------------------------------ the probe
PROBE_CS = (1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0)
"""The fixed grid of inverse regularisation strengths every probe and the TF-IDF baseline choose from. It
reaches strong regularisation: MiniLM's 1536 pair features of MRPC (n = 1000 and 3000, two seeds) scored
0.69-0.71 with C >= 0.01 and 0.74-0.75 with 1e-4 in reach. It reaches weak regularisation too: on a grid
that ended at 10, the unstandardised TF-IDF baseline chose that edge in 6 of 8 fits (SST-2 and MRPC, 300 and
3000 examples, seeds 0 and 1); with 100 and 1000 in reach, SST-2's seed-0 fits still chose 10."""

PROBE_FOLDS = 3
"""Stratified folds of the training examples (fewer when a class has fewer examples)."""

PROBE_METRIC = "accuracy"
"""What probes and their baselines are scored by, and the criterion C is chosen by, on every task. MRPC's
GLUE metric, F1 of the "paraphrase" class, would rank a constant "paraphrase" above a probe that is more
often right, since most of MRPC's pairs are paraphrases."""


def blas_threads():
    """A context in which NumPy's and SciPy's BLAS run on one thread. A probe's problem is a few thousand rows by
    a few hundred features: lbfgs then makes matrix-vector products, which a second thread does not speed up.
    On a 2-core machine OpenBLAS's second thread made the same fit 13 times slower (3.4 s instead of 0.26 s at
    n = 3000, 384 features), and one thread also keeps the numbers independent of the core count. Enter it
    after importing scikit-learn: only libraries already loaded are limited."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


@dataclass(frozen=True)
class Probe:
    """A fitted linear probe: the chosen ``C`` (None for a training set of one class, which predicts that
    class; ``cv_scores`` then None too), the mean cross-validated score of every C of ``cs`` (the training
    examples only), the number of folds, and the fitted scikit-learn model."""

    C: float | None
    cs: tuple[float, ...]
    cv_scores: tuple[float, ...] | None
    folds: int
    model: Any

    def predict(self, x) -> np.ndarray:
        if self.C is None:
            return np.full(x.shape[0], self.model)
        with blas_threads():
            return self.model.predict(x)


def fit_probe(train_x, train_y, *, seed: int = 0, cs: Sequence[float] = PROBE_CS, folds: int = PROBE_FOLDS,
              scoring: str = PROBE_METRIC, standardize: bool = True, max_iter: int = 2000) -> Probe:
    """THE linear-probe protocol: a logistic regression whose C is the best of the fixed grid ``cs`` by
    ``scoring`` under stratified ``folds``-fold cross-validation *inside the training examples* (shuffled
    folds drawn from ``seed``; ties go to the stronger regularisation), then refitted on all of them. Nothing
    but ``(train_x, train_y)`` enters the choice, so an eval set only scores. Dense features are
    standardised first (the scaler sees the training examples only); pass ``standardize=False`` for sparse
    features such as TF-IDF rows, which are already L2-normalised. A class with fewer examples than
    ``folds`` lowers the number of folds; with a class of one example no stratified split exists and C is
    scikit-learn's default 1. A training set of one class predicts that class. The fit runs on one BLAS
    thread (:func:`blas_threads`). Reproducible: the same data and seed give the same C and predictions."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cs = tuple(float(c) for c in cs)
    if not cs or any(c <= 0 for c in cs):
        raise ArgumentError(f"a probe needs a grid of positive C values, got {cs}")
    train_y = np.asarray(train_y).astype(int)
    classes, counts = np.unique(train_y, return_counts=True)
    if len(classes) == 1:
        return Probe(C=None, cs=cs, cv_scores=None, folds=0, model=int(classes[0]))
    n_splits = int(min(folds, counts.min()))
    if n_splits >= 2:
        head = LogisticRegressionCV(Cs=list(cs), cv=StratifiedKFold(n_splits, shuffle=True, random_state=int(seed)),
                                    scoring=scoring, max_iter=max_iter, random_state=int(seed), l1_ratios=(0.0,),
                                    use_legacy_attributes=False)
    else:
        head = LogisticRegression(C=1.0, max_iter=max_iter, random_state=int(seed))
    model = make_pipeline(StandardScaler(), head) if standardize else make_pipeline(head)
    with blas_threads():
        model.fit(train_x, train_y)
    if n_splits < 2:
        return Probe(C=1.0, cs=cs, cv_scores=None, folds=0, model=model)
    scores = np.asarray(head.scores_).reshape(n_splits, -1, len(cs))[:, 0, :].mean(axis=0)
    return Probe(C=float(head.C_), cs=cs, cv_scores=tuple(float(s) for s in scores), folds=n_splits, model=model)


def probe_score(task: str, preds, labels, metric: str = PROBE_METRIC) -> float:
    """``metric`` of predictions against labels for ``task`` (accuracy is computed for every task, CoLA's
    GLUE metric being MCC alone)."""
    from lmcourse.finetuning.trainer import task_metrics

    scores = task_metrics(get_task(task).name, np.asarray(preds), np.asarray(labels))
    if metric == "accuracy" and metric not in scores:
        return float(np.mean(np.asarray(preds) == np.asarray(labels)))
    if metric not in scores:
        raise ArgumentError(f"{task} has no metric {metric!r}; it has {sorted(scores)}")
    return float(scores[metric])


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray, eval_y: np.ndarray, task: str,
                 *, seed: int = 0, cs: Sequence[float] = PROBE_CS, metric: str = PROBE_METRIC) -> float:
    """``metric`` (accuracy unless asked, see :data:`PROBE_METRIC`) on the eval set of :func:`fit_probe`
    fitted on frozen features of the training examples (C chosen by cross-validation inside them)."""
    if get_task(task).is_regression:
        raise ArgumentError(f"linear_probe is for classification tasks; {task!r} is a regression task")
    probe = fit_probe(train_x, train_y, seed=seed, cs=cs)
    return probe_score(task, probe.predict(eval_x), eval_y, metric)


# ------------------------------------------------------------------------------------------ TF-IDF
def tfidf_features(task: str, train, evaluation):
    """Sparse TF-IDF features (word uni- and bigrams, sublinear tf, one vectoriser fitted on every training
    sentence) of ``train`` and ``evaluation`` (``datasets.Dataset`` of the task). A sentence pair gets the
    vectors of both sentences and their element-wise product (the words they share)."""
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfVectorizer

    cols = get_task(task).input_columns
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True)
    vec.fit([t for c in cols for t in train[c]])

    def features(ds):
        parts = [vec.transform(ds[c]) for c in cols]
        if len(parts) == 2:
            parts.append(parts[0].multiply(parts[1]))
        return sp.hstack(parts).tocsr()

    return features(train), features(evaluation)


def tfidf_probe(task: str, train, evaluation, *, seed: int = 0, cs: Sequence[float] = PROBE_CS,
                metric: str = PROBE_METRIC) -> float:
    """The bag-of-words baseline beside the probes: :func:`tfidf_features` and the same protocol as
    :func:`linear_probe` (:func:`fit_probe`: the same grid, folds and seed, C chosen inside ``train``;
    unstandardised, the rows being L2-normalised), scored by ``metric`` on ``evaluation``."""
    if get_task(task).is_regression:
        raise ArgumentError(f"tfidf_probe is for classification tasks; {task!r} is a regression task")
    x_train, x_eval = tfidf_features(task, train, evaluation)
    probe = fit_probe(x_train, train["label"], seed=seed, cs=cs, standardize=False)
    return probe_score(task, probe.predict(x_eval), evaluation["label"], metric)
