"""Pretraining from scratch: packed blocks, BERT's MLM (+NSP) data, and one resumable training loop.

Two objectives (Devlin et al. 2019, BERT, section 3.1; Radford et al. 2018/2019 for GPT):

* **masked LM** — pick 15 % of the tokens; of those, 80 % become ``[MASK]``, 10 % a random token, 10 %
  stay; predict the originals (``DataCollatorForLanguageModeling`` does the masking);
* **next sentence prediction** — ``[CLS] A [SEP] B [SEP]`` where B is the true continuation half of the
  time and a segment of another document otherwise (:func:`build_nsp_pairs`, BERT's recipe simplified);
* **causal LM** — predict token ``t+1`` from tokens ``<= t`` (notebook 06).

:func:`train` is a plain PyTorch loop (AdamW, warmup + linear/cosine decay, gradient clipping, optional
bf16 autocast) whose every step is a pure function of ``(seed, step)``: the batch, the masking and the
dropout are all seeded from the step number. So a run resumed from a checkpoint (model weights as
safetensors + optimizer/scheduler state) follows exactly the loss curve of an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmcourse.errors import SpecError, UnknownNameError

# Training sizes per profile (model sizes come from the Profile: hidden_size, num_layers, num_heads,
# block_size). mlm_steps: BERT steps per model; clm_*: notebook 06.
SIZES: dict[str, dict[str, Any]] = {
    "smoke": {"mlm_steps": 40, "mlm_batch": 16, "mlm_lr": 1e-3, "warmup": 5, "eval_every": 10, "eval_blocks": 32,
              "corpus_lines": 1500, "finetune_profile": "smoke",
              "transfer_inits": ["random init", "MLM"], "transfer_overrides": {"max_steps": 8, "max_eval_samples": 64},
              "clm_steps": 60, "clm_batch": 12, "clm_block": 64, "clm_layers": 2, "clm_heads": 2, "clm_embd": 64,
              "clm_lr": 1e-3, "clm_tuned_lr": 2e-3, "clm_eval_every": 20, "clm_eval_iters": 4, "wiki_steps": 80,
              "final_eval_iters": 8, "sample_chars": 80,
              "kv_layers": 2, "kv_embd": 64, "kv_block": 128, "gen_lengths": [16, 32, 64], "gen_repeats": 1},
    "cpu": {"mlm_steps": 400, "mlm_batch": 16, "mlm_lr": 7e-4, "warmup": 60, "eval_every": 100, "eval_blocks": 128,
            "corpus_lines": None, "finetune_profile": "cpu",
            "transfer_inits": ["random init", "MLM", "MLM+NSP"],
            # a small-data regime (where pretraining should matter most), a couple of minutes per run
            "transfer_overrides": {"max_train_samples": 8000, "num_epochs": 3},
            # nanoGPT's "I only have a macbook" recipe
            "clm_steps": 2000, "clm_batch": 12, "clm_block": 64, "clm_layers": 4, "clm_heads": 4, "clm_embd": 128,
            "clm_lr": 1e-3, "clm_tuned_lr": 2e-3, "clm_eval_every": 250, "clm_eval_iters": 20, "wiki_steps": 1000,
            "final_eval_iters": 100, "sample_chars": 300,
            "kv_layers": 4, "kv_embd": 256, "kv_block": 512, "gen_lengths": [32, 64, 128, 256, 448], "gen_repeats": 2},
    "gpu": {"mlm_steps": 20000, "mlm_batch": 128, "mlm_lr": 5e-4, "warmup": 1000, "eval_every": 1000,
            "eval_blocks": 512, "corpus_lines": None, "finetune_profile": "gpu",
            "transfer_inits": ["random init", "MLM", "MLM+NSP"], "transfer_overrides": {},
            "clm_steps": 5000, "clm_batch": 64, "clm_block": 256, "clm_layers": 6, "clm_heads": 6, "clm_embd": 384,
            "clm_lr": 1e-3, "clm_tuned_lr": 2e-3, "clm_eval_every": 250, "clm_eval_iters": 200, "wiki_steps": 5000,
            "final_eval_iters": 200, "sample_chars": 500,
            "kv_layers": 12, "kv_embd": 768, "kv_block": 1024, "gen_lengths": [64, 128, 256, 512, 960],
            "gen_repeats": 3},
}


def pretraining_sizes(profile: str) -> dict[str, Any]:
    """Training sizes of notebooks 05/06 for a profile name."""
    if profile not in SIZES:
        raise UnknownNameError(f"no pretraining sizes for profile {profile!r}; known: {sorted(SIZES)}")
    return dict(SIZES[profile])


# ------------------------------------------------------------------------------------------------ data
def pack_blocks(sequences: Sequence[Sequence[int]], block_size: int, separator: int | None = None,
                drop_last: bool = True) -> list[list[int]]:
    """Concatenate token sequences (with ``separator`` after each, if given) and cut into equal blocks.

    No padding is wasted and no text is dropped except the incomplete tail (``drop_last``): the
    ``group_texts`` recipe of the HF language-modelling examples.
    """
    if block_size < 1:
        raise SpecError(f"block_size must be >= 1, got {block_size}")
    stream: list[int] = []
    for seq in sequences:
        stream.extend(seq)
        if separator is not None:
            stream.append(separator)
    n = len(stream) // block_size if drop_last else math.ceil(len(stream) / block_size)
    return [stream[i * block_size:(i + 1) * block_size] for i in range(n)]


def bert_blocks(tokenizer, texts: Sequence[str], block_size: int) -> list[list[int]]:
    """Texts → ``[CLS] ... [SEP]`` blocks of exactly ``block_size`` tokens (content packed across lines)."""
    ids = [e.ids for e in tokenizer.backend_tokenizer.encode_batch(list(texts), add_special_tokens=False)]
    inner = pack_blocks(ids, block_size - 2)
    return [[tokenizer.cls_token_id, *b, tokenizer.sep_token_id] for b in inner]


def split_documents(lines: Sequence[str]) -> list[list[str]]:
    """Group corpus lines into documents: a wikitext article starts at a ``= Title =`` heading
    (one ``=`` each side); other lines (tiny-shakespeare) are grouped by 200."""
    docs: list[list[str]] = []
    current: list[str] = []
    for line in lines:
        s = line.strip()
        if not s:
            continue
        is_title = s.startswith("= ") and s.endswith(" =") and not s.startswith("= =")
        if (is_title or len(current) >= 200) and current:
            docs.append(current)
            current = []
        if not is_title:
            current.append(s)
    if current:
        docs.append(current)
    return docs


def sentence_segments(doc: Sequence[str]) -> list[str]:
    """Sentences of a wikitext document (its text is tokenized: sentences end with `` . ``); other lines stay."""
    out: list[str] = []
    for line in doc:
        parts = [p.strip() for p in line.split(" . ")]
        out.extend(p + (" ." if i < len(parts) - 1 else "") for i, p in enumerate(parts) if p)
    return out


def tokenize_segments(tokenizer, documents: Sequence[Sequence[str]]) -> list[list[list[int]]]:
    """Each document as a list of token-id lists, one per sentence (:func:`sentence_segments`), without
    special tokens: the input :func:`build_nsp_pairs` expects."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    return [[e.ids for e in backend.encode_batch(sentence_segments(doc), add_special_tokens=False)]
            for doc in documents]


@dataclass
class NspExample:
    """One NSP training pair: token ids of A and B and ``label`` (0: B follows A, 1: B is random)."""

    a: list[int]
    b: list[int]
    label: int


def build_nsp_pairs(documents: Sequence[Sequence[Sequence[int]]], max_tokens: int, seed: int = 0,
                    random_next_prob: float = 0.5) -> list[NspExample]:
    """BERT's ``create_instances_from_document``, simplified: sentence pairs for MLM + NSP.

    Walk each document's segments, collecting them into a chunk of up to ``max_tokens - 3`` tokens; A is
    the first ``k`` segments of the chunk (``k`` random), B is the rest of the chunk (label 0, "is next")
    or, with probability ``random_next_prob`` (and always when the chunk has one segment), segments of a
    *different* random document (label 1); the chunk's unused segments are then put back. Pairs longer
    than the budget lose tokens from the end of the longer side.
    """
    if len(documents) < 2:
        raise SpecError("NSP needs at least two documents (random next segments come from another one)")
    rng = random.Random(seed)
    target = max_tokens - 3  # [CLS] A [SEP] B [SEP]
    out: list[NspExample] = []
    for d, doc in enumerate(documents):
        chunk: list[Sequence[int]] = []
        length = 0
        i = 0
        while i < len(doc):
            chunk.append(doc[i])
            length += len(doc[i])
            if i == len(doc) - 1 or length >= target:
                if chunk:
                    a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                    a = [t for seg in chunk[:a_end] for t in seg]
                    if len(chunk) == 1 or rng.random() < random_next_prob:
                        label = 1
                        other = rng.randrange(len(documents) - 1)
                        other += other >= d  # any document but this one
                        odoc = documents[other]
                        start = rng.randrange(len(odoc))
                        b: list[int] = []
                        for seg in odoc[start:]:
                            b.extend(seg)
                            if len(b) >= target - len(a):
                                break
                        i -= len(chunk) - a_end  # put the unused segments back
                    else:
                        label = 0
                        b = [t for seg in chunk[a_end:] for t in seg]
                    while len(a) + len(b) > target:
                        (a if len(a) > len(b) else b).pop()
                    if a and b:
                        out.append(NspExample(a, b, label))
                chunk, length = [], 0
            i += 1
    return out


def nsp_features(tokenizer, pairs: Sequence[NspExample]) -> list[dict[str, list[int] | int]]:
    """``[CLS] A [SEP] B [SEP]`` ids, ``token_type_ids`` and ``next_sentence_label`` for each pair."""
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    feats = []
    for p in pairs:
        ids = [cls, *p.a, sep, *p.b, sep]
        feats.append({"input_ids": ids, "token_type_ids": [0] * (len(p.a) + 2) + [1] * (len(p.b) + 1),
                      "next_sentence_label": p.label})
    return feats


def mlm_collator(tokenizer, mlm_probability: float = 0.15):
    """HF's masking collator: 15 % of non-special tokens, of which 80 % ``[MASK]``, 10 % random, 10 % kept."""
    from transformers import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=mlm_probability,
                                           mask_replace_prob=0.8, random_replace_prob=0.1)


def collate_seeded(collator, features: Sequence[dict[str, Any]], seed: int) -> dict[str, Tensor]:
    """Run a (random) collator with the global torch RNG seeded, so the masking of a batch is reproducible."""
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        return collator([dict(f) for f in features])
    finally:
        torch.set_rng_state(state)


# ---------------------------------------------------------------------------------------------- models
def bert_config(profile, tokenizer, **overrides: Any):
    """A ``BertConfig`` with the profile's sizes (hidden, layers, heads, block) and our vocabulary."""
    from transformers import BertConfig

    h = profile.hidden_size
    kw = dict(vocab_size=len(tokenizer), hidden_size=h, num_hidden_layers=profile.num_layers,
              num_attention_heads=profile.num_heads, intermediate_size=4 * h,
              max_position_embeddings=max(profile.block_size, 128), type_vocab_size=2,
              pad_token_id=tokenizer.pad_token_id)
    kw.update(overrides)
    return BertConfig(**kw)


def bert_for_pretraining(config, nsp: bool, seed: int = 0) -> nn.Module:
    """``BertForMaskedLM`` (MLM only) or ``BertForPreTraining`` (MLM + NSP head and pooler), seeded init."""
    from transformers import BertForMaskedLM, BertForPreTraining

    torch.manual_seed(seed)
    model = BertForPreTraining(config) if nsp else BertForMaskedLM(config)
    return model


def model_flops_per_token(model: nn.Module, seq_len: int) -> float:
    """``6 N + 12 L H Q T`` for a BERT (``model.config``) or lmcourse GPT (``config.n_layer`` ...)."""
    from lmcourse.flops import matmul_params, training_flops_per_token

    c = model.config
    if hasattr(c, "num_hidden_layers"):
        L, H, d = c.num_hidden_layers, c.num_attention_heads, c.hidden_size
    else:
        L, H, d = c.n_layer, c.n_head, c.n_embd
    return training_flops_per_token(matmul_params(model), L, H, d // H, seq_len)


def mlm_step_outputs(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """Loss (MLM, + NSP when the batch has ``next_sentence_label``) and masked-token accuracy."""
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    out = model(**inputs)
    logits = out.prediction_logits if hasattr(out, "prediction_logits") else out.logits
    sel = labels != -100
    mlm_logits = logits[sel].float()
    mlm_loss = F.cross_entropy(mlm_logits, labels[sel])
    stats = {"mlm_loss": float(mlm_loss.detach()),
             "mlm_acc": float((mlm_logits.argmax(-1) == labels[sel]).float().mean())}
    loss = mlm_loss
    if "next_sentence_label" in batch and hasattr(out, "seq_relationship_logits"):
        nsp_logits = out.seq_relationship_logits.float()
        nsp_loss = F.cross_entropy(nsp_logits, batch["next_sentence_label"])
        loss = loss + nsp_loss
        stats["nsp_loss"] = float(nsp_loss.detach())
        stats["nsp_acc"] = float((nsp_logits.argmax(-1) == batch["next_sentence_label"]).float().mean())
    stats["loss"] = float(loss.detach())
    return loss, stats


def clm_step_outputs(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """Causal LM loss: an lmcourse GPT computes it from ``targets``; an HF causal LM from its logits."""
    x, y = batch["input_ids"], batch["targets"]
    if hasattr(getattr(model, "module", model), "generation_config"):  # transformers model (even inside DDP)
        logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))
    else:
        loss = model(x, y).loss
    return loss, {"loss": float(loss.detach())}


# ------------------------------------------------------------------------------------------- batches
class BlockBatches:
    """Step → batch for fixed blocks: a seeded permutation per epoch, masking seeded by the step.

    ``features`` are dicts (``input_ids`` [+ ``token_type_ids``, ``next_sentence_label``]); ``collator``
    pads and masks. ``batch(step)`` depends only on ``(seed, step)``, which is what makes resuming exact.
    """

    def __init__(self, features: Sequence[dict[str, Any]], batch_size: int, collator, seed: int = 0):
        if len(features) < batch_size:
            raise SpecError(f"only {len(features)} examples for batch size {batch_size}; use more text")
        self.features, self.batch_size, self.collator, self.seed = list(features), batch_size, collator, seed
        self.per_epoch = len(self.features) // batch_size
        self._perm: tuple[int, list[int]] | None = None

    def _permutation(self, epoch: int) -> list[int]:
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._perm = (epoch, torch.randperm(len(self.features), generator=g).tolist())
        return self._perm[1]

    def __call__(self, step: int) -> dict[str, Tensor]:
        epoch, k = divmod(step, self.per_epoch)
        idx = self._permutation(epoch)[k * self.batch_size:(k + 1) * self.batch_size]
        return collate_seeded(self.collator, [self.features[i] for i in idx], self.seed * 1_000_003 + step)


class StreamBatches:
    """Step → random windows of a token stream (nanoGPT's ``get_batch``), seeded by ``(seed, step)``."""

    def __init__(self, data: Tensor, block_size: int, batch_size: int, seed: int = 0):
        if data.numel() <= block_size + 1:
            raise SpecError(f"token stream of {data.numel()} tokens is too short for block_size {block_size}")
        self.data, self.block_size, self.batch_size, self.seed = data.long(), block_size, batch_size, seed

    def __call__(self, step: int) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        ix = torch.randint(self.data.numel() - self.block_size - 1, (self.batch_size,), generator=g)
        x = torch.stack([self.data[i:i + self.block_size] for i in ix.tolist()])
        y = torch.stack([self.data[i + 1:i + 1 + self.block_size] for i in ix.tolist()])
        return {"input_ids": x, "targets": y}


# ---------------------------------------------------------------------------------------- training loop
@dataclass
class TrainConfig:
    """Optimiser and schedule of :func:`train` (defaults: BERT-ish AdamW with warmup + linear decay)."""

    max_steps: int = 100
    lr: float = 5e-4
    warmup_steps: int = 10
    schedule: str = "linear"  # linear | cosine (cosine decays to min_lr_ratio * lr, as nanoGPT does)
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    eval_every: int = 50
    log_every: int = 1
    bf16: bool = False  # torch.autocast bf16 (CPU with AVX512-BF16/AMX, or CUDA)
    seed: int = 0
    save_every: int | None = None  # checkpoint every n steps (and at the end) when output_dir is given
    fused_adamw: bool = True
    grad_accum_steps: int = 1  # micro-batches per optimiser step (global batch = batches(step) on all processes)

    def lr_at(self, step: int) -> float:
        """Learning rate multiplier at ``step``: linear warmup, then linear or cosine decay."""
        if step < self.warmup_steps:
            return (step + 1) / max(1, self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps))
        if self.schedule == "linear":
            return max(self.min_lr_ratio, 1.0 - progress * (1.0 - self.min_lr_ratio))
        if self.schedule == "cosine":
            return self.min_lr_ratio + 0.5 * (1.0 - self.min_lr_ratio) * (1.0 + math.cos(math.pi * progress))
        raise SpecError(f"unknown schedule {self.schedule!r}; use 'linear' or 'cosine'")


@dataclass
class TrainResult:
    """Per-step train history, eval history and the throughput summary (tokens/s, MFU)."""

    history: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    perf: dict[str, Any] = field(default_factory=dict)
    output_dir: str | None = None

    def series(self, key: str, evals: bool = False) -> tuple[list[int], list[float]]:
        rows = self.evals if evals else self.history
        rows = [r for r in rows if key in r]
        return [int(r["step"]) for r in rows], [float(r[key]) for r in rows]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (not biases, LayerNorm), fused kernel where available."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=cfg.fused_adamw)
    except (RuntimeError, TypeError):  # pragma: no cover - fused kernel not available for this device
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


def save_weights(model: nn.Module, folder: Path) -> None:
    """Safetensors: ``save_pretrained`` for HF models, ``safetensors.torch.save_model`` (tied-aware) otherwise."""
    folder.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(folder)
    else:
        from safetensors.torch import save_model

        save_model(model, str(folder / "model.safetensors"))


def load_weights(model: nn.Module, folder: Path) -> None:
    """Load the weights :func:`save_weights` wrote into an already built ``model`` (in place)."""
    if hasattr(model, "save_pretrained"):
        fresh = type(model).from_pretrained(folder)  # handles tied weights the HF way
        model.load_state_dict(fresh.state_dict())
    else:
        from safetensors.torch import load_model

        load_model(model, str(folder / "model.safetensors"))


def save_checkpoint(folder: str | Path, model: nn.Module, optimizer, step: int, result: TrainResult) -> Path:
    """``checkpoint-<step>/``: weights (safetensors), ``trainer_state.pt`` (optimizer, step, histories)."""
    folder = Path(folder) / f"checkpoint-{step}"
    save_weights(model, folder)
    torch.save({"optimizer": optimizer.state_dict(), "step": step, "history": result.history,
                "evals": result.evals}, folder / "trainer_state.pt")
    return folder


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The ``checkpoint-<step>`` folder with the largest step, or ``None``."""
    cks = sorted(Path(output_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return cks[-1] if cks else None


def train(model: nn.Module, batches: Callable[[int], dict[str, Tensor]],
          step_outputs: Callable[[nn.Module, dict[str, Tensor]], tuple[Tensor, dict[str, float]]],
          cfg: TrainConfig, evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
          output_dir: str | Path | None = None, resume_from: str | Path | None = None,
          peak_flops: float | None = None, seq_len: int | None = None, progress: bool = True,
          stop_after: int | None = None) -> TrainResult:
    """Train ``model`` for ``cfg.max_steps`` steps (from a checkpoint if ``resume_from``).

    Step ``s`` uses ``batches(s)`` and reseeds torch with ``(seed, s)`` before the forward pass (dropout),
    and the LR is ``cfg.lr * cfg.lr_at(s)``: nothing depends on what happened in the process before,
    so resuming is exact. ``stop_after`` ends early (to simulate an interruption). Tokens/s counts the
    time of forward+backward+optimizer steps only; MFU uses ``6N + 12LHQT`` with ``N = matmul_params``.

    Under a launcher (torchrun, ``accelerate launch``) the same call trains data-parallel: ``batches(s)``
    is the *global* batch, each process takes its shard, splits it into ``cfg.grad_accum_steps``
    micro-batches, DDP averages gradients, logged numbers are averaged over processes and only the main
    process writes checkpoints (:mod:`lmcourse.distributed`).
    """
    from contextlib import nullcontext

    from tqdm.auto import tqdm

    from lmcourse import distributed as dist
    from lmcourse.perf import Throughput

    device = next(model.parameters()).device
    opt = make_optimizer(model, cfg)
    result = TrainResult(output_dir=str(output_dir) if output_dir else None)
    start = 0
    if resume_from is not None:
        ck = Path(resume_from)
        load_weights(model, ck)
        state = torch.load(ck / "trainer_state.pt", weights_only=True)  # a file this function wrote
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
        result.history, result.evals = list(state["history"]), list(state["evals"])
    rank, world = dist.init_from_env()
    net = dist.wrap_model(model)
    flops = None
    thr = Throughput()
    model.train()
    end = cfg.max_steps if stop_after is None else min(cfg.max_steps, stop_after)
    bar = tqdm(range(start, end), disable=not progress, desc="train", leave=False, mininterval=5)
    for step in bar:
        shard = dist.shard_batch(batches(step), rank, world)
        micro = [{k: v.to(device) for k, v in mb.items()} for mb in dist.micro_batches(shard, cfg.grad_accum_steps)]
        batch = micro[0]
        if flops is None:
            T = seq_len or batch["input_ids"].size(1)
            flops = model_flops_per_token(model, T)
            thr.flops_per_token, thr.peak_flops = flops, peak_flops
        lr = cfg.lr * cfg.lr_at(step)
        for g in opt.param_groups:
            g["lr"] = lr
        torch.manual_seed(cfg.seed * 7_919 + step)  # dropout of this step
        thr.start()
        parts = []
        for i, mb in enumerate(micro):
            sync = i == len(micro) - 1 or world == 1
            with nullcontext() if sync else net.no_sync():
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                    loss, part = step_outputs(net, mb)
                (loss / len(micro)).backward()
            parts.append(part)
        stats = dist.reduce_stats({k: sum(p[k] for p in parts) / len(parts) for k in parts[0]})
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip else None
        opt.step()
        opt.zero_grad(set_to_none=True)
        thr.stop(sum(mb["input_ids"].numel() for mb in micro))
        if step % cfg.log_every == 0 or step == end - 1:
            row = {"step": step + 1, "lr": lr, **stats}
            if gnorm is not None:
                row["grad_norm"] = float(gnorm)
            result.history.append(row)
            bar.set_postfix(loss=f"{stats['loss']:.3f}", refresh=False)  # redraw at mininterval only
        done = step + 1
        if evaluate is not None and (done % cfg.eval_every == 0 or done == cfg.max_steps):
            model.eval()
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                ev = evaluate(model)
            model.train()
            result.evals.append({"step": done, **ev})
        if output_dir is not None and dist.is_main_process() and (
                (cfg.save_every and done % cfg.save_every == 0) or done == end):
            save_checkpoint(output_dir, model, opt, done, result)
    model.eval()
    result.perf = {**thr.summary(), "bf16": cfg.bf16, "steps_timed": thr.steps}
    return result


# ------------------------------------------------------------------------------------------- evaluation
def mlm_evaluator(features: Sequence[dict[str, Any]], collator, batch_size: int = 32, seed: int = 12345
                  ) -> Callable[[nn.Module], dict[str, float]]:
    """Held-out blocks with a *fixed* masking: MLM loss (per masked token) and accuracy of a model."""
    batches = [collate_seeded(collator, features[i:i + batch_size], seed + i)
               for i in range(0, len(features), batch_size)]

    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        tot_loss = tot_ok = tot_n = 0.0
        nsp_ok = nsp_n = 0.0
        for b in batches:
            b = {k: v.to(device) for k, v in b.items()}
            inputs = {k: v for k, v in b.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            out = model(**inputs)
            logits = out.prediction_logits if hasattr(out, "prediction_logits") else out.logits
            sel = b["labels"] != -100
            lg = logits[sel].float()
            tot_loss += float(F.cross_entropy(lg, b["labels"][sel], reduction="sum"))
            tot_ok += float((lg.argmax(-1) == b["labels"][sel]).sum())
            tot_n += float(sel.sum())
            if "next_sentence_label" in b and hasattr(out, "seq_relationship_logits"):
                nsp_ok += float((out.seq_relationship_logits.argmax(-1) == b["next_sentence_label"]).sum())
                nsp_n += b["next_sentence_label"].numel()
        res = {"mlm_loss": tot_loss / tot_n, "mlm_acc": tot_ok / tot_n}
        if nsp_n:
            res["nsp_acc"] = nsp_ok / nsp_n
        return res

    return evaluate


class UnigramMLM(nn.Module):
    """A "model" that ignores the context: every position predicts the training-set token frequencies
    (add-one smoothed; special tokens excluded, they are never masked). The level an MLM reaches by
    learning frequencies alone; a model that uses the context must beat it."""

    def __init__(self, train_features: Sequence[dict[str, Any]], vocab_size: int, exclude_ids: Sequence[int] = ()):
        super().__init__()
        counts = 1.0 + token_counts(train_features, vocab_size).double()
        if len(exclude_ids):
            counts[torch.as_tensor(list(exclude_ids))] = 0.0
        self.log_probs = nn.Parameter((counts / counts.sum()).log().float(), requires_grad=False)

    def forward(self, input_ids: Tensor, **_: Any):
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.log_probs.expand(*input_ids.shape, -1))


def token_counts(features: Sequence[dict[str, Any]], vocab_size: int) -> Tensor:
    """How often each token id occurs in ``features`` (their ``input_ids``)."""
    counts = torch.zeros(vocab_size, dtype=torch.long)
    for f in features:
        counts += torch.bincount(torch.as_tensor(f["input_ids"]), minlength=vocab_size)[:vocab_size]
    return counts


def mean_pairwise_cosine(vectors: Tensor) -> float:
    """Mean cosine similarity over all pairs of distinct rows: about 0 for random vectors in many dimensions,
    near 1 when the rows have collapsed into one direction (a cone)."""
    if vectors.shape[0] < 2:
        raise ValueError(f"need at least 2 vectors, got {vectors.shape[0]}")
    v = F.normalize(vectors.double(), dim=1)
    n, total = v.shape[0], v.sum(0)
    return float((total @ total - n) / (n * (n - 1)))  # sum over all pairs minus the n self-pairs


def embedding_cone(embeddings: Tensor, counts: Tensor, band: int = 1000, exclude_ids: Sequence[int] = ()
                   ) -> dict[str, float]:
    """Mean pairwise cosine of the input embeddings of the ``band`` most frequent and the ``band`` rarest
    (seen at least once) tokens. With a tied MLM decoder, every softmax step pushes the vectors of tokens that
    are *not* the answer in one shared direction, and rare tokens are almost never the answer — so they drift
    into a narrow cone (Gao et al. 2019, "Representation Degeneration Problem", ICLR), losing what told them
    apart at random initialisation."""
    counts = counts.clone()
    if len(exclude_ids):
        counts[torch.as_tensor(list(exclude_ids))] = 0
    seen = torch.nonzero(counts > 0).squeeze(1)
    order = seen[torch.argsort(counts[seen], descending=True, stable=True)]
    band = min(band, len(order) // 2)
    if band < 2:
        raise ValueError(f"too few distinct tokens seen ({len(order)}) to form two bands")
    e = embeddings.detach()
    return {"frequent": mean_pairwise_cosine(e[order[:band]]), "rare": mean_pairwise_cosine(e[order[-band:]]),
            "band": band}


def clm_evaluator(data: Tensor, block_size: int, batch_size: int, iters: int, seed: int = 4242
                  ) -> Callable[[nn.Module], dict[str, float]]:
    """nanoGPT's ``estimate_loss``: mean loss over ``iters`` fixed random batches of ``data``."""
    get = StreamBatches(data, block_size, batch_size, seed)
    batches = [get(i) for i in range(iters)]

    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        losses = [float(clm_step_outputs(model, {k: v.to(device) for k, v in b.items()})[0]) for b in batches]
        loss = sum(losses) / len(losses)
        return {"loss": loss, "ppl": math.exp(loss)}

    return evaluate


def masking_stats(batch: dict[str, Tensor], original: Tensor, mask_token_id: int,
                  special_ids: Sequence[int] = ()) -> dict[str, float]:
    """Fractions of selected tokens (labels != -100) that became [MASK], a random token, or stayed."""
    sel = batch["labels"] != -100
    ids = batch["input_ids"]
    eligible = torch.ones_like(original, dtype=torch.bool)
    for s in special_ids:
        eligible &= original != s
    n = float(sel.sum())
    return {"selected": n / float(eligible.sum()),
            "mask": float((ids[sel] == mask_token_id).sum()) / n,
            "kept": float((ids[sel] == original[sel]).sum()) / n,
            "random": float(((ids[sel] != mask_token_id) & (ids[sel] != original[sel])).sum()) / n,
            "special_selected": float((sel & ~eligible).sum())}


def write_json(path: str | Path, data: Any) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=1, default=float))


def perf_row(name: str, result: TrainResult) -> dict[str, Any]:
    """One table row: tokens/s, achieved GFLOP/s and MFU of a run."""
    p = result.perf
    achieved = p["train_tokens_per_s"] * (p["flops_per_token"] or 0)
    return {"run": name, "bf16": p.get("bf16"), "tokens/s": p["train_tokens_per_s"], "GFLOP/s": achieved / 1e9,
            "peak GFLOP/s": (p["peak_flops"] or 0) / 1e9, "MFU": p["mfu"]}


def config_summary(cfg: TrainConfig) -> dict[str, Any]:
    return asdict(cfg)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0
