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

The package: :mod:`~lmcourse.embeddings.data` (sizes, corpus, vocabulary), :mod:`~lmcourse.embeddings.sgns`
(subsampling, noise, pairs and skip-gram with negative sampling), :mod:`~lmcourse.embeddings.glove`,
:mod:`~lmcourse.embeddings.gensim_side` (gensim's ``Word2Vec`` on the same sentences),
:mod:`~lmcourse.embeddings.evaluation` (the benchmarks, neighbours, PCA), :mod:`~lmcourse.embeddings.seeds`
(runs over seeds and the random floor) and :mod:`~lmcourse.embeddings.training` (what the loops share).
Use the names re-exported here (``from lmcourse import embeddings as E``).
"""

from __future__ import annotations

from lmcourse.embeddings.data import (
    EmbeddingSizes,
    EncodedCorpus,
    Vocab,
    build_vocab,
    encode_corpus,
    load_sentences,
    tokenize,
)
from lmcourse.embeddings.evaluation import (
    BENCHMARKS,
    evaluate_vectors,
    nearest_words,
    pca_2d,
    to_keyed_vectors,
    word_pair_spearman,
)
from lmcourse.embeddings.gensim_side import (
    train_gensim,
)
from lmcourse.embeddings.glove import (
    Cooccurrence,
    GloVe,
    cooccurrence,
    glove_loss,
    glove_weight,
    train_glove,
)
from lmcourse.embeddings.seeds import (
    GENSIM_SGNS,
    OURS_SGNS,
    RANDOM_VECTORS,
    SEED_METRICS,
    random_baseline,
    score_row,
    sgns_over_seeds,
)
from lmcourse.embeddings.sgns import (
    SkipGramNS,
    keep_probabilities,
    noise_distribution,
    sgns_loss,
    sgns_sgd_step,
    skipgram_pairs,
    subsample,
    train_sgns,
)
from lmcourse.embeddings.training import (
    TrainResult,
)

__all__ = [
    "BENCHMARKS",
    "GENSIM_SGNS",
    "OURS_SGNS",
    "RANDOM_VECTORS",
    "SEED_METRICS",
    "Cooccurrence",
    "EmbeddingSizes",
    "EncodedCorpus",
    "GloVe",
    "SkipGramNS",
    "TrainResult",
    "Vocab",
    "build_vocab",
    "cooccurrence",
    "encode_corpus",
    "evaluate_vectors",
    "glove_loss",
    "glove_weight",
    "keep_probabilities",
    "load_sentences",
    "nearest_words",
    "noise_distribution",
    "pca_2d",
    "random_baseline",
    "score_row",
    "sgns_loss",
    "sgns_over_seeds",
    "sgns_sgd_step",
    "skipgram_pairs",
    "subsample",
    "to_keyed_vectors",
    "tokenize",
    "train_gensim",
    "train_glove",
    "train_sgns",
    "word_pair_spearman",
]
