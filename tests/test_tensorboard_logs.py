"""Training runs write TensorBoard events under their run folder; read back with TensorBoard's own reader."""

from __future__ import annotations

import pytest
import torch

from lmcourse import pretraining as PT
from lmcourse import tensorboard_logs as TB
from lmcourse import tokenization as T
from lmcourse.context import resolve_context
from lmcourse.profiles import get_profile


@pytest.fixture
def tensorboard_on(monkeypatch):
    monkeypatch.setenv(TB.SWITCH_ENV, "1")


def test_pretraining_events_are_the_recorded_history(tmp_path, tensorboard_on):
    ctx = resolve_context("smoke", seed=0, device="cpu", bf16=False, run_dir=tmp_path)
    tok = T.train_wordpiece(T.corpus_lines(max_lines=400), vocab_size=400)
    prof = get_profile("smoke").with_overrides(hidden_size=32, num_layers=2, num_heads=2, block_size=32)
    model = PT.bert_for_pretraining(PT.bert_config(prof, tok), nsp=False, ctx=ctx)
    feats = [{"input_ids": b} for b in PT.bert_blocks(tok, T.corpus_lines(max_lines=300), 32)]
    coll = PT.mlm_collator(tok)
    res = PT.train(model, PT.BlockBatches(feats, 8, coll, ctx), PT.gathered_mlm_step_outputs,
                   PT.TrainConfig(max_steps=6, lr=1e-3, warmup_steps=2, eval_every=3), ctx,
                   evaluate=PT.mlm_evaluator(feats[:8], coll, ctx), progress=False, tensorboard="mlm-test")
    folder = res.tensorboard_dir
    assert folder is not None and str(tmp_path / "tensorboard") in folder and "mlm-test" in folder
    assert TB.event_folders(tmp_path) == [tmp_path / "tensorboard" / folder.rsplit("/", 1)[-1]]
    scalars = TB.read_scalars(folder)
    for key in ("loss", "mlm_loss", "lr", "grad_norm"):
        logged = scalars[f"train/{key}"]
        assert [s for s, _ in logged] == [r["step"] for r in res.history]
        torch.testing.assert_close(torch.tensor([v for _, v in logged]),
                                   torch.tensor([r[key] for r in res.history]), rtol=1e-6, atol=0)
    assert [s for s, _ in scalars["eval/mlm_loss"]] == [3, 6]
    assert [v for _, v in scalars["eval/mlm_loss"]] == pytest.approx([e["mlm_loss"] for e in res.evals], rel=1e-6)
    speeds = [v for _, v in scalars["train/tokens_per_s"]]
    assert len(speeds) == 6 and min(speeds) > 0


def test_no_events_when_switched_off_or_asked_for_none(tmp_path, monkeypatch):
    ctx = resolve_context("smoke", seed=0, device="cpu", bf16=False, run_dir=tmp_path)
    monkeypatch.setenv(TB.SWITCH_ENV, "0")
    assert TB.scalar_writer(ctx, "x") is None
    monkeypatch.setenv(TB.SWITCH_ENV, "1")
    writer = TB.scalar_writer(ctx, "a b/c")
    writer.add_scalar("t", 1.5, 2)
    writer.close()
    assert TB.read_scalars(writer.log_dir) == {"t": [(2, 1.5)]}
    assert "/tensorboard/a-b-c-" in writer.log_dir
    interactive = resolve_context("smoke", seed=0, device="cpu", bf16=False)
    monkeypatch.setenv("LMCOURSE_RUNS_DIR", str(tmp_path / "elsewhere"))
    assert TB.log_root(interactive) == tmp_path / "elsewhere" / "interactive" / "tensorboard"


def test_finetuning_events_are_the_trainer_log_history(tmp_path, tensorboard_on):
    from transformers import AutoTokenizer, BertConfig, BertModel

    from lmcourse.finetuning import finetune
    from lmcourse.models import resolve

    tok = AutoTokenizer.from_pretrained(resolve("minilm-l6"))
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    ctx = resolve_context("smoke", seed=0, device="cpu", bf16=False, run_dir=tmp_path / "run")
    res = finetune("sst2", str(tmp_path / "tiny"), ctx=ctx, max_train_samples=96, max_eval_samples=32,
                   num_epochs=2, batch_size=16, max_length=32, progress=False, bf16=False, logging_steps=1,
                   save_model=False)
    assert res.tensorboard_dir is not None and str(tmp_path / "run" / "tensorboard") in res.tensorboard_dir
    scalars = TB.read_scalars(res.tensorboard_dir)
    train_rows = [r for r in res.log_history if "loss" in r]
    assert len(train_rows) >= 6
    assert scalars["train/loss"] == [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in train_rows]
    assert [v for _, v in scalars["train/learning_rate"]] == pytest.approx([r["learning_rate"] for r in train_rows])
    evals = [r for r in res.log_history if "eval_accuracy" in r]  # the selection metric, once per epoch
    assert len(evals) == 2
    assert scalars["eval/accuracy"] == [(r["step"], pytest.approx(r["eval_accuracy"], rel=1e-6)) for r in evals]
    speeds = [v for _, v in scalars["train/train_tokens_per_s"]]
    assert len(speeds) == len(train_rows) and min(speeds) > 0


def test_word_vector_loops_log_their_curves(tmp_path, tensorboard_on):
    from lmcourse import embeddings as E

    ctx = resolve_context("smoke", seed=0, device="cpu", bf16=False, run_dir=tmp_path)
    rng = torch.Generator().manual_seed(0)
    words = [f"w{i}" for i in range(40)]
    corpus = [[words[int(i)] for i in torch.randint(0, 40, (12,), generator=rng)] for _ in range(150)]
    vocab = E.build_vocab(corpus, min_count=1)
    enc = E.encode_corpus(corpus, vocab)
    sgns = E.train_sgns(enc, vocab, ctx, dim=8, window=2, epochs=3, batch_size=128, progress=False)
    logged = TB.read_scalars(sgns.extra["tensorboard_dir"])
    assert logged["train/loss"] == [(n, pytest.approx(v, rel=1e-6)) for n, v in sgns.extra["curve"]]
    assert [v for _, v in logged["epoch/loss"]] == pytest.approx(sgns.losses, rel=1e-6)
    glove = E.train_glove(E.cooccurrence(enc, len(vocab), window=3), ctx, dim=8, epochs=4, batch_size=256,
                          progress=False)
    logged = TB.read_scalars(glove.extra["tensorboard_dir"])
    assert logged["train/loss"] == [(e + 1, pytest.approx(v, rel=1e-6)) for e, v in enumerate(glove.losses)]
    assert len(logged["train/entries_per_s"]) == 4


def test_lmcourse_runs_lists_runs_and_the_tensorboard_command(tmp_path, tensorboard_on, capsys):
    import json

    from lmcourse.cli import main as cli_main
    from lmcourse.runner import list_runs

    assert cli_main(["runs", "--runs-dir", str(tmp_path)]) == 0
    assert "no runs under" in capsys.readouterr().out
    a = tmp_path / "07_finetuning_glue" / "20261202-a"
    b = tmp_path / "cpu" / "07-minilm-l6-rte-cpu-s0-x"
    for folder, metrics, status in [(a, {"sst2/accuracy": 0.81, "glue/average_score": 0.7}, "completed"),
                                    (b, {"rte/accuracy": 0.6}, "failed")]:
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({
            "notebook": "07_finetuning_glue.ipynb", "profile": "cpu", "status": status, "metrics": metrics,
            "wall_time_s": 12.5, "started_at": "2026-12-02T01:00:00+00:00"}))
    rows = {r["run"]: r for r in list_runs(tmp_path)}
    assert rows["07_finetuning_glue/20261202-a"]["main metric"] == "glue/average_score"
    assert rows["07_finetuning_glue/20261202-a"]["value"] == 0.7
    assert rows["cpu/07-minilm-l6-rte-cpu-s0-x"]["status"] == "failed"
    assert rows["cpu/07-minilm-l6-rte-cpu-s0-x"]["main metric"] == "rte/accuracy"
    assert cli_main(["runs", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "20261202-a" in out and "failed" in out and "tensorboard --logdir" not in out  # no events yet
    ctx = resolve_context("smoke", seed=0, device="cpu", bf16=False, run_dir=a)
    writer = TB.scalar_writer(ctx, "finetune")
    writer.add_scalar("train/loss", 1.0, 1)
    writer.close()
    assert {r["run"]: r["tensorboard"] for r in list_runs(tmp_path)}["07_finetuning_glue/20261202-a"] == 1
    assert cli_main(["runs", "--runs-dir", str(tmp_path)]) == 0
    assert f"tensorboard --logdir {tmp_path}" in capsys.readouterr().out
