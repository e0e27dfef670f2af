"""Encoder–decoder training and text-to-text tasks (notebook 10): a T5-style tokenizer, span-corruption
batches and loss, GLUE cast as text, a paraphrase-generation task from MRPC, and their scores.

**Text to text** (Raffel et al. 2020, section 2.4 and Appendix D): every task is "text in, text out". A
classification example becomes a task prefix plus its fields, and the label becomes its *name*::

    "sst2 sentence: it 's a charming and often affecting journey ."   ->  "positive"
    "mrpc sentence1: ... sentence2: ..."                                ->  "equivalent"

The model is trained with the ordinary seq2seq cross-entropy and, at test time, *generates*; its output is
mapped back to a label by exact string match. Anything else ("positiv", an empty string) is not a label:
it counts as wrong, and its rate is reported next to the GLUE metric.

**Paraphrase generation**: MRPC's pairs labelled equivalent, read as "sentence1 -> sentence2". BLEU
(``sacrebleu``) and ROUGE-L (``rouge-score``) compare generations with the reference sentence. Copying the
input is the baseline to beat: paraphrases share most of their words.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lmcourse.context import RunContext
from lmcourse.data import get_task
from lmcourse.errors import ArgumentError
from lmcourse.pretraining.data import epoch_permutation
from lmcourse.pretraining.span_corruption import corrupted_lengths, span_corruption_batch

T5_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2 as in T5's vocabulary

# T5's formats (the prefixes of its GLUE mixture); the targets are the label names of lmcourse.data
TEXT_TO_TEXT_FIELDS = {"sst2": ("sentence",), "mrpc": ("sentence1", "sentence2"), "cola": ("sentence",),
                       "rte": ("sentence1", "sentence2"), "wnli": ("sentence1", "sentence2")}
PARAPHRASE_PREFIX = "paraphrase: "


# ------------------------------------------------------------------------------------------ tokenizer
def t5_tokenizer(texts: Sequence[str], vocab_size: int = 8000, n_sentinels: int = 100, min_frequency: int = 2):
    """A byte-level BPE tokenizer laid out like T5's: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, ``n_sentinels``
    sentinels ``<extra_id_k>`` (special tokens, never split) and ``</s>`` appended to every sequence.

    T5 itself uses a 32k SentencePiece model; a BPE trained on the course corpus keeps everything offline
    (the ``gpu`` profile loads the real ``t5-small`` tokenizer instead).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    sentinels = [f"<extra_id_{k}>" for k in range(n_sentinels)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=[*T5_SPECIAL_TOKENS, *sentinels],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A $B </s>",
                                                       special_tokens=[("</s>", tok.token_to_id("</s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   additional_special_tokens=sentinels, model_max_length=512,
                                   model_input_names=["input_ids", "attention_mask"])


def token_stream(tokenizer, lines: Sequence[str]) -> Tensor:
    """All ``lines`` tokenized (no special tokens) and concatenated: the stream span corruption cuts windows from."""
    ids = tokenizer(list(lines), add_special_tokens=False)["input_ids"]
    return torch.tensor([t for row in ids for t in row], dtype=torch.long)


def t5_config_for(tokenizer, section: dict[str, Any]):
    """A :class:`~lmcourse.models.t5.T5Config` of the profile's sizes for ``tokenizer``'s vocabulary."""
    from lmcourse.models.t5 import T5Config

    return T5Config(vocab_size=len(tokenizer), d_model=section["d_model"], d_kv=section["d_kv"],
                    d_ff=section["d_ff"], num_layers=section["layers"], num_heads=section["heads"],
                    relative_attention_num_buckets=section.get("buckets", 32),
                    relative_attention_max_distance=section.get("max_distance", 128),
                    dropout_rate=section.get("dropout", 0.0), feed_forward_proj=section.get("ff", "gated-gelu"),
                    tie_word_embeddings=section.get("tied", True), pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id)


# ------------------------------------------------------------------------------------ span corruption
class SpanCorruptionBatches:
    """Step -> a span-corruption batch of random windows of a token stream, seeded by ``(ctx.seed, step)``
    (windows and spans alike), so :func:`lmcourse.pretraining.train` can resume exactly."""

    def __init__(self, data: Tensor, chunk_len: int, batch_size: int, sentinel_ids: Sequence[int],
                 eos_token_id: int, ctx: RunContext, noise_density: float = 0.15, mean_span_length: float = 3.0,
                 seed_offset: int = 0) -> None:
        if data.numel() <= chunk_len:
            raise ArgumentError(f"token stream of {data.numel()} tokens is too short for chunks of {chunk_len}")
        self.data, self.chunk_len, self.batch_size = data.long().cpu(), chunk_len, batch_size
        self.sentinels, self.eos = list(sentinel_ids), eos_token_id
        self.noise_density, self.mean_span_length = noise_density, mean_span_length
        self.seed = ctx.seed * 1_000_003 + seed_offset

    @property
    def lengths(self) -> tuple[int, int]:
        """``(input, target)`` lengths of every example, EOS included."""
        n_in, n_out = corrupted_lengths(self.chunk_len, self.noise_density, self.mean_span_length)
        return n_in + 1, n_out + 1

    def __call__(self, step: int) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(self.seed + step)
        ix = torch.randint(self.data.numel() - self.chunk_len, (self.batch_size,), generator=g)
        blocks = torch.stack([self.data[i:i + self.chunk_len] for i in ix.tolist()])
        return span_corruption_batch(blocks, self.sentinels, self.eos, self.noise_density, self.mean_span_length, g)


def seq2seq_step_outputs(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """Mean cross-entropy over the target tokens (labels ``-100`` ignored), for :func:`~lmcourse.pretraining.train`."""
    out = model(batch["input_ids"], batch.get("attention_mask"), labels=batch["labels"],
                decoder_attention_mask=batch.get("decoder_attention_mask"))
    return out.loss, {"loss": float(out.loss.detach())}


def seq2seq_evaluator(batches: Callable[[int], dict[str, Tensor]], iters: int, ctx: RunContext
                      ) -> Callable[[nn.Module], dict[str, float]]:
    """Mean loss per target token over ``batches(0 .. iters-1)`` (fixed held-out batches) on ``ctx.device``, in
    eval mode: :func:`lmcourse.objectives.heldout_loss_evaluator` with the seq2seq loss (one evaluator for the
    three objectives of notebook 10)."""
    from lmcourse.objectives import heldout_loss_evaluator

    return heldout_loss_evaluator(batches, seq2seq_step_outputs, iters, ctx)


# --------------------------------------------------------------------------------------- text to text
def task_baselines(task: str, train, dev) -> dict[str, float]:
    """The two baselines of every GLUE table in notebook 10, as GLUE task scores on ``dev``: the training
    set's majority class (chosen on train, scored on dev) and TF-IDF + logistic regression fit on ``train``."""
    from lmcourse import finetuning as ft
    from lmcourse.metrics import task_score

    labels = np.asarray(dev["label"])
    majority = int(np.bincount(np.asarray(train["label"])).argmax())
    return {"majority": task_score(task, ft.task_metrics(task, np.full(len(labels), majority), labels)),
            "TF-IDF + LR": task_score(task, ft.tfidf_baseline(task, train, dev))}


def local_hub_t5(model_id: str, download: bool = False):
    """``(tokenizer, transformers.T5ForConditionalGeneration)`` of a Hub checkpoint, or ``None`` when its files
    are not in the local Hugging Face cache and ``download`` is False (nothing is fetched then)."""
    import transformers

    try:
        tok = transformers.AutoTokenizer.from_pretrained(model_id, local_files_only=not download)
        model = transformers.T5ForConditionalGeneration.from_pretrained(model_id, use_safetensors=True,
                                                                        local_files_only=not download)
    except OSError:
        if download:
            raise
        return None
    return tok, model.eval()


def hub_logit_diff(ours: nn.Module, hf_model: nn.Module, tokenizer, sources: Sequence[str],
                   targets: Sequence[str]) -> float:
    """Largest ``|logit|`` difference of two T5s (ours and ``transformers``') on real, padded text pairs."""
    batch = tokenizer(list(sources), padding=True, return_tensors="pt")
    labels = tokenizer(list(targets), padding=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return (ours.eval()(**batch, labels=labels).logits
                - hf_model.eval()(**batch, labels=labels).logits).abs().max().item()


def glue_as_text(task: str, example: dict[str, Any]) -> tuple[str, str]:
    """``(source, target)`` of one GLUE example in T5's format (``"sst2 sentence: ..."`` -> ``"positive"``)."""
    spec = get_task(task)
    if spec.name not in TEXT_TO_TEXT_FIELDS:
        raise ArgumentError(f"no text-to-text format for {task!r}; formats exist for {sorted(TEXT_TO_TEXT_FIELDS)}")
    source = spec.name + "".join(f" {col}: {example[col]}" for col in TEXT_TO_TEXT_FIELDS[spec.name])
    return source, spec.label_names[int(example["label"])]


def label_of_text(task: str, text: str) -> int:
    """The label whose name ``text`` is (surrounding spaces ignored), or ``-1``: not a label."""
    names = get_task(task).label_names
    text = text.strip()
    return names.index(text) if text in names else -1


class Seq2SeqBatches:
    """Step -> a padded batch of ``(source, target)`` texts: a seeded permutation per epoch (as
    :class:`lmcourse.pretraining.BlockBatches`); padding in the labels is ``-100``."""

    def __init__(self, tokenizer, sources: Sequence[str], targets: Sequence[str], batch_size: int, ctx: RunContext,
                 max_source_len: int = 128, max_target_len: int = 64) -> None:
        if len(sources) != len(targets) or len(sources) < batch_size:
            raise ArgumentError(f"{len(sources)} sources, {len(targets)} targets: need equal numbers, at least "
                                f"batch_size={batch_size}")
        self.src = tokenizer(list(sources), truncation=True, max_length=max_source_len)["input_ids"]
        self.tgt = tokenizer(list(targets), truncation=True, max_length=max_target_len)["input_ids"]
        self.pad, self.batch_size, self.seed = tokenizer.pad_token_id, batch_size, ctx.seed
        self.per_epoch = len(self.src) // batch_size
        self._perm: tuple[int, list[int]] | None = None

    def _permutation(self, epoch: int) -> list[int]:
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, epoch_permutation(len(self.src), self.seed, epoch))
        return self._perm[1]

    @staticmethod
    def _pad(rows: Sequence[Sequence[int]], value: int) -> Tensor:
        width = max(len(r) for r in rows)
        return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=torch.long)

    def __call__(self, step: int) -> dict[str, Tensor]:
        epoch, k = divmod(step, self.per_epoch)
        idx = self._permutation(epoch)[k * self.batch_size:(k + 1) * self.batch_size]
        input_ids = self._pad([self.src[i] for i in idx], self.pad)
        return {"input_ids": input_ids, "attention_mask": (input_ids != self.pad).long(),
                "labels": self._pad([self.tgt[i] for i in idx], -100)}


@torch.no_grad()
def generate_texts(model, tokenizer, sources: Sequence[str], ctx: RunContext, batch_size: int = 64,
                   max_source_len: int = 128, **generate_kwargs: Any) -> list[str]:
    """Decoded outputs of ``model.generate`` for each source (special tokens dropped), in batches on
    ``ctx.device``; ``generate_kwargs`` (``max_new_tokens``, ``num_beams``, ``sample_fn``) go to ``generate``."""
    model.eval()
    out: list[str] = []
    for i in range(0, len(sources), batch_size):
        enc = tokenizer(list(sources[i:i + batch_size]), truncation=True, max_length=max_source_len, padding=True,
                        return_tensors="pt").to(ctx.device)
        ids = model.generate(enc["input_ids"], enc["attention_mask"], **generate_kwargs)
        out.extend(tokenizer.batch_decode(ids, skip_special_tokens=True))
    return [t.strip() for t in out]


def text_to_text_scores(task: str, outputs: Sequence[str], labels: Sequence[int]) -> dict[str, float]:
    """The GLUE metric of generated label names (``lmcourse.metrics``); an output that is not a label counts
    as wrong (it is scored as a wrong label), and ``invalid_rate`` says how often that happened."""
    from lmcourse.metrics import compute_glue_metric, task_score

    n_labels = get_task(task).num_labels
    labels = [int(y) for y in labels]
    parsed = [label_of_text(task, t) for t in outputs]
    preds = [p if p >= 0 else (y + 1) % n_labels for p, y in zip(parsed, labels, strict=True)]
    result = dict(compute_glue_metric(task, preds, labels))
    result["score"] = task_score(task, result)
    result["invalid_rate"] = float(np.mean([p < 0 for p in parsed])) if parsed else 0.0
    return result


# ------------------------------------------------------------------------------- paraphrase generation
def paraphrase_pairs(dataset) -> tuple[list[str], list[str]]:
    """``(sources, references)`` from MRPC rows labelled equivalent: ``"paraphrase: " + sentence1`` ->
    ``sentence2``."""
    rows = [r for r in dataset if int(r["label"]) == 1]
    return [PARAPHRASE_PREFIX + r["sentence1"] for r in rows], [r["sentence2"] for r in rows]


def generation_scores(outputs: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU (``sacrebleu``, its default 13a tokenisation, 0-100) and mean ROUGE-1/2/L F1
    (``rouge-score`` with stemming, 0-1) of ``outputs`` against one reference each."""
    import sacrebleu
    from rouge_score import rouge_scorer

    if len(outputs) != len(references) or not outputs:
        raise ArgumentError(f"{len(outputs)} outputs for {len(references)} references; need equal, non-zero numbers")
    bleu = sacrebleu.corpus_bleu(list(outputs), [list(references)], force=True)  # MRPC text is pre-tokenised
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    rouge = [scorer.score(ref, out) for out, ref in zip(outputs, references, strict=True)]
    return {"bleu": float(bleu.score),
            **{k: float(np.mean([r[k].fmeasure for r in rouge])) for k in ("rouge1", "rouge2", "rougeL")}}


def copy_baseline(sources: Sequence[str], prefix: str = PARAPHRASE_PREFIX) -> list[str]:
    """The output of a model that copies its input (without the task prefix)."""
    return [s[len(prefix):] if s.startswith(prefix) else s for s in sources]
