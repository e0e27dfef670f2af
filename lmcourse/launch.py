"""Command-line training entry points that run unchanged on one process or many.

    lmcourse pretrain --steps 200 --out runs/pretrain                       # one process
    torchrun --nproc-per-node 2 -m lmcourse pretrain --steps 200 ...        # two processes (gloo on CPU)
    accelerate launch --num_processes 8 -m lmcourse pretrain ...            # eight GPUs (NCCL)
    torchrun --nproc-per-node 2 -m lmcourse finetune --task sst2 ...        # Trainer's own DDP

``pretrain`` trains the lmcourse GPT as a character-level causal LM (nanoGPT's Shakespeare setting)
with :func:`lmcourse.pretraining.train`; ``--global-batch`` is the number of sequences per optimiser
step whatever the number of processes and ``--grad-accum`` (see :mod:`lmcourse.distributed`). Only the
main process writes ``history.json`` and checkpoints. ``finetune`` calls
:func:`lmcourse.finetuning.finetune`, whose ``Trainer`` handles DDP by itself.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_pretrain(args: argparse.Namespace) -> int:
    import torch

    from lmcourse import distributed as dist
    from lmcourse.data import load_corpus
    from lmcourse.models.gpt import GPT, GPTConfig
    from lmcourse.pretraining import StreamBatches, TrainConfig, clm_step_outputs, train
    from lmcourse.runtime import seed_everything, set_cpu_threads
    from lmcourse.tracking import write_json_atomic

    _, world = dist.init_from_env()
    set_cpu_threads(args.threads)
    per_device = dist.per_device_batch_size(args.global_batch, args.grad_accum, world)
    text = "\n".join(load_corpus(args.corpus, "train")["text"])
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    train_data = data[: int(0.9 * len(data))]
    seed_everything(args.seed)
    config = GPTConfig(vocab_size=len(chars), block_size=args.block_size, n_layer=args.n_layer, n_head=args.n_head,
                       n_embd=args.n_embd, dropout=args.dropout)
    model = GPT(config).to(dist.local_device())
    cfg = TrainConfig(max_steps=args.steps, lr=args.lr, warmup_steps=args.warmup, schedule="cosine",
                      min_lr_ratio=0.1, weight_decay=0.1, betas=(0.9, 0.99), eval_every=args.steps + 1,
                      bf16=args.bf16, seed=args.seed, grad_accum_steps=args.grad_accum, fused_adamw=False)
    out = Path(args.out)
    result = train(model, StreamBatches(train_data, args.block_size, args.global_batch, args.seed), clm_step_outputs,
                   cfg, output_dir=out / "checkpoints" if args.save else None, progress=dist.is_main_process())
    if dist.is_main_process():
        write_json_atomic(out / "history.json", {
            "world_size": world, "global_batch": args.global_batch, "grad_accum_steps": args.grad_accum,
            "per_device_batch": per_device, "history": result.history,
            "tokens_per_s_per_process": result.perf.get("train_tokens_per_s"),
            "tokens_per_s_total": (result.perf.get("train_tokens_per_s") or 0.0) * world,
        })
        print(f"pretrain: {args.steps} steps on {world} process(es), final loss {result.history[-1]['loss']:.4f} "
              f"-> {out / 'history.json'}")
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from lmcourse import distributed as dist
    from lmcourse.finetuning import finetune, metric_record
    from lmcourse.tracking import write_json_atomic

    overrides = {k: v for k, v in {"max_steps": args.max_steps, "max_train_samples": args.max_train_samples,
                                   "batch_size": args.batch_size, "learning_rate": args.learning_rate}.items()
                 if v is not None}
    result = finetune(args.task, args.model, profile=args.profile, seed=args.seed, output_dir=args.out, **overrides)
    if dist.is_main_process():
        record = metric_record(result)
        if args.out:
            write_json_atomic(Path(args.out) / "finetune_metrics.json", record)
        print(json.dumps(record, indent=2, default=str))
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("pretrain", help="char-level GPT pretraining; runs under torchrun/accelerate launch")
    p.add_argument("--corpus", default="tiny-shakespeare")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--global-batch", type=int, default=16, help="sequences per optimiser step, all processes")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step on each process")
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--save", action="store_true", help="write checkpoints (main process only)")
    p.add_argument("--out", default="runs/pretrain")
    p.set_defaults(func=cmd_pretrain)

    p = subparsers.add_parser("finetune", help="fine-tune on a GLUE task; runs under torchrun/accelerate launch")
    p.add_argument("--task", required=True)
    p.add_argument("--model", default=None)
    p.add_argument("--profile", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--max-train-samples", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--out", default=None)
    p.set_defaults(func=cmd_finetune)


def run(argv: list[str]) -> int:
    """Run a ``lmcourse`` training command in this process (for :func:`lmcourse.distributed.launch_in_notebook`)."""
    from lmcourse.cli import main

    return main(argv)
