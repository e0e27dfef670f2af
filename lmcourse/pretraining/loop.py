"""The pretraining objectives (MLM + NSP, causal LM) and one resumable, device-aware training loop.

:func:`train` is a plain PyTorch loop (AdamW, warmup + linear/cosine decay, gradient clipping, bf16
autocast by the run context's policy) whose every step is a pure function of ``(seed, step)``: the
batch, the masking and the dropout are all seeded from the step number. So a run resumed from a
checkpoint (model weights as safetensors + optimizer state) follows exactly the loss curve of an
uninterrupted run. It trains on the context's device, and its MFU divides by the peak measured on that
device in the dtype it actually computes in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmcourse.context import RunContext, resolve_context
from lmcourse.errors import ArgumentError


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


def bert_for_pretraining(config, nsp: bool, ctx: RunContext, seed_offset: int = 0) -> nn.Module:
    """``BertForMaskedLM`` (MLM only) or ``BertForPreTraining`` (MLM + NSP head and pooler), initialised
    from ``ctx.seed + seed_offset`` (the global RNG is left as it was) and placed on ``ctx.device``."""
    from transformers import BertForMaskedLM, BertForPreTraining

    with ctx.seeded(seed_offset):
        model = BertForPreTraining(config) if nsp else BertForMaskedLM(config)
    return model.to(ctx.device)


def _mlm_inputs(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


def _pretraining_loss(mlm_logits: Tensor, mlm_targets: Tensor, nsp_logits: Tensor | None,
                      batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """MLM cross-entropy over the masked positions' logits (+ NSP when the batch has its labels), and stats."""
    mlm_logits = mlm_logits.float()
    mlm_loss = F.cross_entropy(mlm_logits, mlm_targets)
    stats = {"mlm_loss": float(mlm_loss.detach()),
             "mlm_acc": float((mlm_logits.argmax(-1) == mlm_targets).float().mean())}
    loss = mlm_loss
    if "next_sentence_label" in batch and nsp_logits is not None:
        nsp_logits = nsp_logits.float()
        nsp_loss = F.cross_entropy(nsp_logits, batch["next_sentence_label"])
        loss = loss + nsp_loss
        stats["nsp_loss"] = float(nsp_loss.detach())
        stats["nsp_acc"] = float((nsp_logits.argmax(-1) == batch["next_sentence_label"]).float().mean())
    stats["loss"] = float(loss.detach())
    return loss, stats


def mlm_step_outputs(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """Loss (MLM, + NSP when the batch has ``next_sentence_label``) and masked-token accuracy.

    The model's own forward: the MLM head projects *every* position to the vocabulary and the loss then
    keeps the masked ones. :func:`gathered_mlm_step_outputs` computes the same loss for less."""
    labels = batch["labels"]
    out = model(**_mlm_inputs(batch))
    logits = out.prediction_logits if hasattr(out, "prediction_logits") else out.logits
    sel = labels != -100
    return _pretraining_loss(logits[sel], labels[sel], getattr(out, "seq_relationship_logits", None), batch)


def gathered_mlm_step_outputs(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """:func:`mlm_step_outputs` with the MLM head applied only at the masked positions.

    The loss reads the vocabulary logits of the ~15 % masked tokens only, yet ``BertForMaskedLM`` projects
    all positions (``2 d V`` FLOPs each, the tied decoder). Gathering the masked hidden states first and then
    running the head (transform + decoder) gives the same loss and gradients for about 15 % of the head's
    cost, as efficient BERT pretraining code does (NVIDIA's BERT, the 24-hour "academic budget" BERT). A
    DDP-wrapped model takes the full path: DDP's gradient hooks need the wrapper's own forward.
    """
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel):
        return mlm_step_outputs(model, batch)
    if not hasattr(model, "bert") or not hasattr(getattr(model, "cls", None), "predictions"):
        raise ArgumentError(f"gathered_mlm_step_outputs needs a BertForMaskedLM or BertForPreTraining, got "
                            f"{type(model).__name__}; use mlm_step_outputs for other models")
    labels = batch["labels"]
    out = model.bert(**_mlm_inputs(batch))
    sel = labels != -100
    mlm_logits = model.cls.predictions(out.last_hidden_state[sel])
    nsp_head = getattr(model.cls, "seq_relationship", None)
    nsp_logits = nsp_head(out.pooler_output) if nsp_head is not None and out.pooler_output is not None else None
    return _pretraining_loss(mlm_logits, labels[sel], nsp_logits, batch)


def clm_step_outputs(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """Causal LM loss: an lmcourse GPT computes it from ``targets``; an HF causal LM from its logits."""
    x, y = batch["input_ids"], batch["targets"]
    if hasattr(getattr(model, "module", model), "generation_config"):  # transformers model (even inside DDP)
        logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))
    else:
        loss = model(x, y).loss
    return loss, {"loss": float(loss.detach())}


# ---------------------------------------------------------------------------------------- training loop
@dataclass
class TrainConfig:
    """Optimiser and schedule of :func:`train` (defaults: BERT-ish AdamW with warmup + linear decay).

    The seed and the device are not here: they come from the run context."""

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
    bf16: bool | None = None  # bf16 autocast; None: the run context's policy (where the device supports it)
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
        raise ArgumentError(f"unknown schedule {self.schedule!r}; use 'linear' or 'cosine'")


@dataclass
class TrainResult:
    """Per-step train history, eval history and the throughput summary (tokens/s, FLOPs, MFU, device)."""

    history: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    perf: dict[str, Any] = field(default_factory=dict)
    output_dir: str | None = None
    tensorboard_dir: str | None = None  # where its TensorBoard events are (None: none written)

    def series(self, key: str, evals: bool = False) -> tuple[list[int], list[float]]:
        rows = self.evals if evals else self.history
        rows = [r for r in rows if key in r]
        return [int(r["step"]) for r in rows], [float(r[key]) for r in rows]


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: weight decay on matrices (Linear, Embedding) only, not on biases and
    LayerNorm gains (BERT / GPT-3 / nanoGPT practice). Tied tensors appear once."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over :func:`decay_groups`, fused kernel where available."""
    groups = decay_groups(model, cfg.weight_decay)
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

        load_model(model, str(folder / "model.safetensors"), device=str(next(model.parameters()).device))


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
          cfg: TrainConfig, ctx: RunContext | None = None,
          evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
          output_dir: str | Path | None = None, resume_from: str | Path | None = None, progress: bool = True,
          stop_after: int | None = None, tensorboard: str | None = "pretraining") -> TrainResult:
    """Train ``model`` on ``ctx.device`` for ``cfg.max_steps`` steps (from a checkpoint if ``resume_from``).

    ``ctx`` (default: :func:`~lmcourse.context.resolve_context` from the environment) gives the device, the
    seed and the bf16 policy (``cfg.bf16`` overrides it). Step ``s`` uses ``batches(s)`` and reseeds torch
    with ``(ctx.seed, s)`` before the forward pass (dropout), and the LR is ``cfg.lr * cfg.lr_at(s)``:
    nothing depends on what happened in the process before, so resuming is exact. ``stop_after`` ends
    early (to simulate an interruption). Tokens/s counts the time of forward+backward+optimizer steps only;
    MFU uses :func:`lmcourse.measurement.model_flops_per_token` over the peak measured on ``ctx.device`` in
    the dtype of this run (bf16 or fp32).

    Under a launcher (torchrun, ``accelerate launch``) the same call trains data-parallel: ``batches(s)``
    is the *global* batch, each process takes its shard, splits it into ``cfg.grad_accum_steps``
    micro-batches, DDP averages gradients, logged numbers are averaged over processes and only the main
    process writes checkpoints (:mod:`lmcourse.distributed`).

    The logged numbers also go to TensorBoard event files named ``tensorboard`` under the run's folder
    (:mod:`lmcourse.tensorboard_logs`): ``train/<stat>`` (loss, lr, grad_norm, tokens_per_s of the step) and
    ``eval/<metric>``; ``tensorboard=None`` writes none.
    """
    from contextlib import nullcontext

    from tqdm.auto import tqdm

    from lmcourse import distributed as dist
    from lmcourse.measurement import Throughput, measure_peak_flops

    ctx = ctx if ctx is not None else resolve_context()
    device = ctx.device
    bf16 = ctx.bf16 if cfg.bf16 is None else bool(cfg.bf16)
    model.to(device)
    opt = make_optimizer(model, cfg)
    result = TrainResult(output_dir=str(output_dir) if output_dir else None)
    start = 0
    if resume_from is not None:
        ck = Path(resume_from)
        load_weights(model, ck)
        state = torch.load(ck / "trainer_state.pt", weights_only=True, map_location=device)  # a file we wrote
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
        result.history, result.evals = list(state["history"]), list(state["evals"])
    rank, world = dist.init_from_env()
    net = dist.wrap_model(model)
    peak = measure_peak_flops(torch.bfloat16 if bf16 else torch.float32, device)
    thr = Throughput(model=model, peak_flops=peak, device=device)
    model.train()
    end = cfg.max_steps if stop_after is None else min(cfg.max_steps, stop_after)
    from lmcourse.tensorboard_logs import scalar_writer

    writer = scalar_writer(ctx, tensorboard) if tensorboard and dist.is_main_process() else None
    bar = tqdm(range(start, end), disable=not progress, desc="train", leave=False, mininterval=5)
    for step in bar:
        shard = dist.shard_batch(batches(step), rank, world)
        micro = [{k: v.to(device) for k, v in mb.items()} for mb in dist.micro_batches(shard, cfg.grad_accum_steps)]
        lr = cfg.lr * cfg.lr_at(step)
        for g in opt.param_groups:
            g["lr"] = lr
        torch.manual_seed(ctx.seed * 7_919 + step)  # dropout of this step
        seconds_before, tokens_before = thr.seconds, thr.tokens
        thr.start()
        parts = []
        for i, mb in enumerate(micro):
            sync = i == len(micro) - 1 or world == 1
            with nullcontext() if sync else net.no_sync():
                with ctx.autocast(bf16):
                    loss, part = step_outputs(net, mb)
                (loss / len(micro)).backward()
            parts.append(part)
        stats = dist.reduce_stats({k: sum(p[k] for p in parts) / len(parts) for k in parts[0]})
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip else None
        opt.step()
        opt.zero_grad(set_to_none=True)
        thr.stop()
        seq2seq = hasattr(getattr(model, "config", None), "num_decoder_layers")  # an encoder-decoder (T5)
        for mb in micro:
            labels = mb.get("labels")  # an MLM batch: the head's output is used at the masked positions only
            if seq2seq:
                thr.count(mb["input_ids"], mb.get("attention_mask"), target_ids=labels)
                continue
            head = int((labels != -100).sum()) if labels is not None and labels.shape == mb["input_ids"].shape \
                else None
            thr.count(mb["input_ids"], mb.get("attention_mask"), head_tokens=head)
        if step % cfg.log_every == 0 or step == end - 1:
            row = {"step": step + 1, "lr": lr, **stats}
            if gnorm is not None:
                row["grad_norm"] = float(gnorm)
            result.history.append(row)
            if writer is not None:
                step_seconds = thr.seconds - seconds_before
                for key, value in row.items():
                    if key != "step":
                        writer.add_scalar(f"train/{key}", value, step + 1)
                if step_seconds > 0:
                    writer.add_scalar("train/tokens_per_s", (thr.tokens - tokens_before) / step_seconds, step + 1)
            bar.set_postfix(loss=f"{stats['loss']:.3f}", refresh=False)  # redraw at mininterval only
        done = step + 1
        if evaluate is not None and (done % cfg.eval_every == 0 or done == cfg.max_steps):
            model.eval()
            with torch.no_grad(), ctx.autocast(bf16):
                ev = evaluate(model)
            model.train()
            result.evals.append({"step": done, **ev})
            if writer is not None:
                for key, value in ev.items():
                    writer.add_scalar(f"eval/{key}", value, done)
        if output_dir is not None and dist.is_main_process() and (
                (cfg.save_every and done % cfg.save_every == 0) or done == end):
            save_checkpoint(output_dir, model, opt, done, result)
    model.eval()
    result.perf = {**thr.summary(), "bf16": bf16, "steps_timed": thr.steps}
    if writer is not None:
        result.tensorboard_dir = str(writer.log_dir)
        writer.close()
    return result
