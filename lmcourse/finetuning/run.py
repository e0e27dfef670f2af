"""One fine-tuning run: load a classifier, tokenise a GLUE task, train with the ``Trainer`` on the run
context's device, evaluate every eval split, and return the numbers (:class:`FinetuneResult`)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmcourse.context import RunContext, resolve_context
from lmcourse.data import GlueTask, get_task, load_glue
from lmcourse.errors import UnknownNameError
from lmcourse.finetuning.recipes import task_settings
from lmcourse.finetuning.trainer import (
    GlueTrainer,
    QuietProgressCallback,
    ThroughputCallback,
    glue_compute_metrics,
)


def tokenize_glue(dataset, tokenizer, task: str | GlueTask, max_length: int, pad_to_max_length: bool = False):
    """Tokenise a GLUE split (one or two text columns), keeping ``label`` and a ``length`` column."""
    spec = task if isinstance(task, GlueTask) else get_task(task)
    cols = spec.input_columns

    def encode(batch):
        texts = [batch[c] for c in cols]
        enc = tokenizer(*texts, truncation=True, max_length=max_length,
                        padding="max_length" if pad_to_max_length else False)
        enc["length"] = [int(sum(m)) for m in enc["attention_mask"]]
        return enc

    remove = [c for c in dataset.column_names if c != "label"]
    return dataset.map(encode, batched=True, remove_columns=remove, desc=f"tokenise {spec.name}",
                       new_fingerprint=_tokenized_fingerprint(dataset, tokenizer, spec, max_length, pad_to_max_length))


def _tokenized_fingerprint(dataset, tokenizer, spec: GlueTask, max_length: int, pad_to_max_length: bool) -> str | None:
    """The fingerprint ``datasets`` caches a tokenised split under, from what decides the token ids: the input
    split's fingerprint, the fast tokenizer's whole definition (its JSON: normaliser, vocabulary, post-processor)
    and the call's settings. Left to itself, ``datasets`` pickles the tokenizer object to hash it, which took
    1.4 s of a 17 s fine-tuning run of MiniLM. ``None`` (that default) for a tokenizer without a fast backend."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    parent = getattr(dataset, "_fingerprint", None)
    if backend is None or parent is None:
        return None
    from datasets.fingerprint import Hasher

    return Hasher.hash(("lmcourse.tokenize_glue/1", parent, backend.to_str(), type(tokenizer).__name__,
                        tuple(tokenizer.model_input_names), tokenizer.padding_side, tokenizer.truncation_side,
                        tokenizer.pad_token_id, spec.name, tuple(spec.input_columns), int(max_length),
                        bool(pad_to_max_length)))


def by_length(dataset) -> tuple[Any, np.ndarray]:
    """A tokenised split sorted by its ``length`` column (shortest first), and the order that sorted it.
    Evaluation batches are padded to their longest example; in a random order most of a batch is padding
    (SST-2's dev set at 64 tokens: a forward pass over 2.5 times the real tokens)."""
    order = np.argsort(np.asarray(dataset["length"]), kind="stable")
    return dataset.select(order.tolist()), order


def _predict_in_order(trainer, dataset) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """``trainer.predict`` over ``dataset`` sorted by length, with the logits and labels put back in the
    dataset's order. The metrics do not depend on the order of the examples."""
    ordered, order = by_length(dataset)
    pred = trainer.predict(ordered, metric_key_prefix="eval")
    logits = np.asarray(pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return logits[inverse], np.asarray(pred.label_ids)[inverse], pred.metrics


def _subset(dataset, n: int | None, seed: int):
    if n is None or n >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(int(n)))



# ------------------------------------------------------------------------------------------ result
@dataclass
class EvalPredictions:
    """Logits and labels of one eval split, with the raw examples for error analysis."""

    logits: np.ndarray
    labels: np.ndarray
    examples: Any  # datasets.Dataset of the untokenised eval split (same order)

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.reshape(-1) if self.logits.shape[-1] == 1 else self.logits.argmax(-1)

    @property
    def probabilities(self) -> np.ndarray:
        return torch.softmax(torch.as_tensor(self.logits, dtype=torch.float32), -1).numpy()


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns: metrics per eval split, speed and memory, predictions, checkpoint."""

    task: str
    model: str
    profile: str
    seed: int
    metrics: dict[str, dict[str, float]]
    main_metric: str
    train_tokens_per_s: float
    train_padded_tokens_per_s: float
    mfu: float | None
    peak_memory_bytes: int
    train_seconds: float
    trainable_params: int
    total_params: int
    train_flops: float | None
    predictions: dict[str, EvalPredictions]
    best_checkpoint: str | None
    settings: dict[str, Any] = field(default_factory=dict)
    throughput: dict[str, Any] = field(default_factory=dict)
    log_history: list[dict[str, Any]] = field(default_factory=list)
    selection: dict[str, Any] = field(default_factory=dict)  # the held-out part of train used to select
    train_examples: Any = None  # datasets.Dataset of the (untokenised) examples trained on, for baselines
    tensorboard_dir: str | None = None  # its TensorBoard events (lmcourse.tensorboard_logs); None: none written

    @property
    def score(self) -> float:
        """The main metric on the first eval split."""
        return self.metrics[next(iter(self.metrics))][self.main_metric]

    def summary(self) -> dict[str, Any]:
        first = next(iter(self.metrics))
        return {"task": self.task, **self.metrics[first], "train_tokens_per_s": self.train_tokens_per_s,
                "mfu": self.mfu, "train_seconds": self.train_seconds, "peak_memory_bytes": self.peak_memory_bytes,
                "trainable_params": self.trainable_params}


def metric_record(result: FinetuneResult) -> dict[str, Any]:
    """The flat ``{task}/{name}`` dict the notebooks record (see the module docstring)."""
    spec = get_task(result.task)
    out: dict[str, Any] = {}
    for i, (split, metrics) in enumerate(result.metrics.items()):
        prefix = spec.name if i == 0 else f"{spec.name}_{split.split('_')[-1]}"
        out.update({f"{prefix}/{k}": v for k, v in metrics.items()})
    t = spec.name
    out.update({f"{t}/train_tokens_per_s": result.train_tokens_per_s,
                f"{t}/train_padded_tokens_per_s": result.train_padded_tokens_per_s,
                f"{t}/mfu": result.mfu, f"{t}/train_flops": result.train_flops,
                f"{t}/peak_memory_bytes": result.peak_memory_bytes,
                f"{t}/train_seconds": result.train_seconds, f"{t}/trainable_params": result.trainable_params})
    return out


# ------------------------------------------------------------------------------------------ model
def load_classifier(task: str | GlueTask, model: str, *, random_init: bool = False, dropout: float | None = None):
    """Tokenizer and ``AutoModelForSequenceClassification`` for ``task`` (regression head for STS-B)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from lmcourse.models import resolve

    spec = task if isinstance(task, GlueTask) else get_task(task)
    path = resolve(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        kwargs: dict[str, Any] = {"num_labels": spec.num_labels}
        if spec.is_regression:
            kwargs["problem_type"] = "regression"
        else:
            kwargs["id2label"] = dict(enumerate(spec.label_names))
            kwargs["label2id"] = {n: i for i, n in enumerate(spec.label_names)}
        config = AutoConfig.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise UnknownNameError(
            f"could not load model {model!r} (resolved to {path!r}): {type(exc).__name__}: {str(exc)[:300]}. "
            "Pass a short name from lmcourse.models.KNOWN_MODELS, a local save_pretrained folder with its "
            "tokenizer, or a Hub id (needs network)."
        ) from None
    if dropout is not None:
        for attr in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout",
                     "classifier_dropout", "seq_classif_dropout"):
            if hasattr(config, attr):
                setattr(config, attr, float(dropout))
    if random_init:
        net = AutoModelForSequenceClassification.from_config(config)
    else:
        net = AutoModelForSequenceClassification.from_pretrained(path, config=config)
    return tokenizer, net


def count_parameters(model: torch.nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters, tied tensors counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def split_selection(train, fraction: float, max_samples: int | None, seed: int):
    """Hold out a seeded part of the training examples for model selection (best checkpoint, early stopping,
    any learning-rate choice), so that the reported GLUE dev set never influences which model is reported.

    Returns ``(train_rest, selection)``; ``selection`` is ``None`` when ``fraction`` is 0. At least 8 and at most
    ``max_samples`` examples are held out, and at least as many stay for training."""
    from lmcourse.errors import ArgumentError

    if not 0.0 <= fraction < 1.0:
        raise ArgumentError(f"selection_fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return train, None
    n = max(8, round(fraction * len(train)))
    if max_samples is not None:
        n = min(n, int(max_samples))
    if n > len(train) // 2:
        raise ArgumentError(f"only {len(train)} training examples: too few to hold out {n} for model selection; "
                            "use more examples or selection_fraction=0 with eval_strategy='no'")
    parts = train.train_test_split(test_size=n, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def _default_output_dir(task: str, model: str, ctx: RunContext) -> str:
    stem = f"{task}-{Path(str(model)).name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    if ctx.run_dir is not None:
        out = ctx.run_dir / "finetune" / stem
        out.mkdir(parents=True, exist_ok=True)
        return str(out)
    return tempfile.mkdtemp(prefix=f"lmcourse-ft-{stem}-")


# ------------------------------------------------------------------------------------------ finetune
@dataclass
class _Splits:
    """The examples of one run: training, the held-out selection part of it, and the eval splits (raw and
    tokenised)."""

    raw_train: Any
    raw_select: Any
    raw_evals: dict[str, Any]
    train: Any = None
    select: Any = None
    evals: dict[str, Any] = field(default_factory=dict)


def _load_splits(spec: GlueTask, s: dict[str, Any], seed: int) -> _Splits:
    """The training examples (``train_indices``, else a seeded subset), a seeded selection part held out of
    them when the run evaluates, and the eval splits (their first ``max_eval_samples``, unshuffled)."""
    if spec.train_split is None:
        raise UnknownNameError(f"GLUE task {spec.name!r} has no training split; it cannot be fine-tuned on")
    raw_train = load_glue(spec.name, spec.train_split)  # DataUnavailableError surfaces unchanged
    raw_evals = {split: load_glue(spec.name, split) for split in spec.eval_splits}
    if s["train_indices"] is not None:
        raw_train = raw_train.select([int(i) for i in s["train_indices"]])
    else:
        raw_train = _subset(raw_train, s["max_train_samples"], seed)
    raw_evals = {k: _subset(v, s["max_eval_samples"], 0) for k, v in raw_evals.items()}
    fraction = s["selection_fraction"] if s["eval_strategy"] != "no" else 0.0
    raw_train, raw_select = split_selection(raw_train, fraction, s["max_selection_samples"], seed)
    return _Splits(raw_train, raw_select, raw_evals)


def _quiet_libraries() -> None:
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # weight loading/saving bars; the Trainer's stays
    datasets.disable_progress_bars()


def _tokenize_splits(splits: _Splits, tokenizer, spec: GlueTask, s: dict[str, Any]) -> None:
    def tok(ds):
        return tokenize_glue(ds, tokenizer, spec, s["max_length"], s["pad_to_max_length"])

    splits.train = tok(splits.raw_train)
    splits.evals = {k: tok(v) for k, v in splits.raw_evals.items()}
    splits.select = tok(splits.raw_select) if splits.raw_select is not None else None


def _training_arguments(s: dict[str, Any], out: Path, evaluating: bool, main: str, use_bf16: bool,
                        device: torch.device, seed: int):
    """The ``TrainingArguments`` of the recipe; selection (best checkpoint, early stopping) only when
    ``evaluating``. A Trainer that would run elsewhere than the context's device is an error."""
    from transformers import TrainingArguments

    from lmcourse.errors import ArgumentError

    args = TrainingArguments(
        output_dir=str(out),
        learning_rate=s["learning_rate"],
        num_train_epochs=float(s["num_epochs"]),
        max_steps=int(s["max_steps"]) if s["max_steps"] else -1,
        per_device_train_batch_size=int(s["batch_size"]),
        per_device_eval_batch_size=int(s["eval_batch_size"]),
        weight_decay=float(s["weight_decay"]),
        warmup_steps=float(s["warmup_ratio"]),
        lr_scheduler_type="linear",
        eval_strategy=s["eval_strategy"],
        eval_steps=s["eval_steps"],
        save_strategy=s["eval_strategy"] if evaluating else "no",
        save_steps=s["eval_steps"],
        save_total_limit=1,
        save_only_model=True,
        load_best_model_at_end=evaluating,
        metric_for_best_model=main if evaluating else None,
        greater_is_better=True,
        train_sampling_strategy="group_by_length" if s["group_by_length"] else "random",
        length_column_name="length",
        bf16=use_bf16,
        use_cpu=device.type == "cpu",
        seed=seed,
        data_seed=seed,
        logging_strategy="steps",
        logging_steps=int(s["logging_steps"]),
        report_to="none",
        disable_tqdm=not s["progress"],
        log_level="error",
        dataloader_num_workers=0,
    )
    if args.device.type != device.type:
        raise ArgumentError(f"the Trainer path runs on {args.device}, not on the run context's device {device}; "
                            "use a context with device 'cpu' or 'cuda'")
    return args


def _build_trainer(net, tokenizer, args, splits: _Splits, spec: GlueTask, s: dict[str, Any], evaluating: bool,
                   throughput: ThroughputCallback, tb_writer: Any | None) -> GlueTrainer:
    """The :class:`GlueTrainer` with its callbacks: throughput, TensorBoard (loss, learning rate, tokens/s and
    the selection metric, under the run folder), early stopping, and the quiet progress bar."""
    import transformers
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, default_data_collator
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    callbacks: list[transformers.TrainerCallback] = [throughput]
    if tb_writer is not None:
        from transformers.integrations import TensorBoardCallback

        callbacks.append(TensorBoardCallback(tb_writer=tb_writer))
    if s["early_stopping_patience"] is not None and evaluating:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=int(s["early_stopping_patience"])))
    trainer = GlueTrainer(
        model=net, args=args, train_dataset=splits.train,
        # selection only: the GLUE dev set is never seen here (sorted by length: the order does not change a metric)
        eval_dataset=by_length(splits.select)[0] if evaluating else None,
        processing_class=tokenizer,
        data_collator=default_data_collator if s["pad_to_max_length"] else DataCollatorWithPadding(tokenizer),
        compute_metrics=glue_compute_metrics(spec), callbacks=callbacks, throughput=throughput,
        fgm_epsilon=s["fgm_epsilon"],
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if s["progress"]:
        trainer.add_callback(QuietProgressCallback)
    return trainer


def _evaluate(trainer, splits: _Splits) -> tuple[dict[str, dict[str, float]], dict[str, EvalPredictions]]:
    """Every eval split's metrics (without the Trainer's loss and timings) and predictions."""
    metrics: dict[str, dict[str, float]] = {}
    predictions: dict[str, EvalPredictions] = {}
    for split, ds in splits.evals.items():
        logits, label_ids, scores = _predict_in_order(trainer, ds)
        metrics[split] = {k[len("eval_"):]: float(v) for k, v in scores.items()
                          if k.startswith("eval_") and k[len("eval_"):] not in
                          ("loss", "runtime", "samples_per_second", "steps_per_second")}
        predictions[split] = EvalPredictions(logits.astype(np.float32), label_ids, splits.raw_evals[split])
    return metrics, predictions


def _keep_or_remove(trainer, out: Path, s: dict[str, Any], created_out: bool) -> Path | None:
    """Save the best model to ``out/best`` (``save_model``) or keep nothing of the run on disk; the
    intermediate checkpoints go unless ``keep_checkpoints``. Returns the saved folder, if any."""
    if s["save_model"]:
        best_dir = out / "best"
        trainer.save_model(str(best_dir))  # safetensors + config + tokenizer (processing_class)
        if not s["keep_checkpoints"]:
            for ckpt in out.glob("checkpoint-*"):
                shutil.rmtree(ckpt, ignore_errors=True)
        return best_dir
    if created_out:  # nothing of this run is kept on disk
        shutil.rmtree(out, ignore_errors=True)
    else:
        for ckpt in out.glob("checkpoint-*"):
            shutil.rmtree(ckpt, ignore_errors=True)
    return None


def finetune(task: str, model: str | None = None, *, ctx: RunContext | None = None, random_init: bool = False,
             output_dir: str | os.PathLike | None = None, **overrides: Any) -> FinetuneResult:
    """Fine-tune ``model`` on GLUE ``task`` and evaluate it on the task's eval split(s).

    ``ctx``: the run context (profile, seed, device, bf16 policy, run folder); default
    :func:`~lmcourse.context.resolve_context` from the environment. ``model``: a short name
    (:func:`lmcourse.models.resolve`), a Hub id or a local ``save_pretrained`` folder with its tokenizer;
    ``None`` takes the profile's ``finetune_model``. ``random_init=True`` builds the same architecture
    with random weights. ``overrides``: see :data:`~lmcourse.finetuning.HYPERPARAMETERS`.
    """
    from lmcourse.errors import ArgumentError
    from lmcourse.measurement import bf16_supported, measure_peak_flops
    from lmcourse.tensorboard_logs import scalar_writer

    # the recipe: settings of the profile and task, the model, the precision
    ctx = ctx if ctx is not None else resolve_context()
    spec = get_task(task)
    prof, seed, device = ctx.profile, ctx.seed, ctx.device
    s = task_settings(prof, spec.name, **overrides)
    model_name = model or prof.finetune_model
    use_bf16 = ctx.bf16 if s["bf16"] is None else bool(s["bf16"])
    if use_bf16 and not bf16_supported(device):
        raise ArgumentError(f"bf16=True but {device} does not support bf16; pass bf16=False")

    splits = _load_splits(spec, s, seed)
    _quiet_libraries()
    ctx.apply()  # the Trainer also seeds from args.seed; model init and dropout follow ctx.seed
    tokenizer, net = load_classifier(spec, model_name, random_init=random_init, dropout=s["dropout"])
    if s["model_init_hook"] is not None:
        net = s["model_init_hook"](net)
    trainable, total = count_parameters(net), count_parameters(net, trainable_only=False)
    _tokenize_splits(splits, tokenizer, spec, s)
    main = spec.main_metric
    evaluating = s["eval_strategy"] != "no" and splits.select is not None

    created_out = output_dir is None or not Path(output_dir).exists()
    out = Path(output_dir) if output_dir is not None else Path(_default_output_dir(spec.name, model_name, ctx))
    out.mkdir(parents=True, exist_ok=True)
    throughput = ThroughputCallback(net, measure_peak_flops(torch.bfloat16 if use_bf16 else torch.float32, device),
                                    device)
    args = _training_arguments(s, out, evaluating, main, use_bf16, device, seed)
    tb_writer = scalar_writer(ctx, f"finetune-{spec.name}-{Path(str(model_name)).name}")
    trainer = _build_trainer(net, tokenizer, args, splits, spec, s, evaluating, throughput, tb_writer)
    trainer.train()

    metrics, predictions = _evaluate(trainer, splits)
    best_dir = _keep_or_remove(trainer, out, s, created_out)
    t = throughput.summary()
    return FinetuneResult(
        task=spec.name, model=str(model_name), profile=prof.name, seed=seed, metrics=metrics, main_metric=main,
        train_tokens_per_s=t["train_tokens_per_s"], train_padded_tokens_per_s=t["train_padded_tokens_per_s"],
        mfu=t["mfu"], peak_memory_bytes=int(t["peak_memory_bytes"]), train_seconds=t["train_seconds"],
        trainable_params=trainable, total_params=total, train_flops=t["train_flops"], predictions=predictions,
        best_checkpoint=str(best_dir) if best_dir is not None else None,
        settings={k: v for k, v in s.items() if k not in ("model_init_hook",)} | {"bf16": use_bf16,
                                                                                  "device": str(device)},
        throughput=t, log_history=list(trainer.state.log_history),
        tensorboard_dir=str(tb_writer.log_dir) if tb_writer is not None else None,
        selection={"examples": len(splits.raw_select) if splits.raw_select is not None else 0,
                   "metric": main if evaluating else None,
                   "best_score": trainer.state.best_metric if evaluating else None,
                   "idx": [int(i) for i in splits.raw_select["idx"]] if splits.raw_select is not None else []},
        train_examples=splits.raw_train,
    )
