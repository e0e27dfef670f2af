"""Test defaults: offline Hugging Face, the offline data mirror, the smoke profile, headless plots.

Set before lmcourse or datasets are imported so every test (and every notebook kernel nbval starts,
which inherits the environment) sees the same configuration.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
_MIRROR = REPO_ROOT.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LMCOURSE_PROFILE", "smoke")
os.environ.setdefault("MPLBACKEND", "Agg")
# no TensorBoard events in the checkout's runs/ from tests (tests/test_tensorboard_logs.py switches them on)
os.environ.setdefault("LMCOURSE_TENSORBOARD", "0")
if "LMCOURSE_DATA_DIR" not in os.environ and _MIRROR.is_dir():
    os.environ["LMCOURSE_DATA_DIR"] = str(_MIRROR)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The offline mirror the tests read (CI: ../shared/data)."""
    value = os.environ.get("LMCOURSE_DATA_DIR")
    if not value or not (Path(value) / "glue").is_dir():
        pytest.fail("LMCOURSE_DATA_DIR must point at the offline data mirror (glue/, corpora/); "
                    "CI sets it to ../shared/data")
    return Path(value)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """A 2-layer hidden-32 BERT with random weights and MiniLM's tokenizer, saved like a checkpoint."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from lmcourse.models import resolve

    tok = AutoTokenizer.from_pretrained(resolve("minilm-l6"))
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-bert")
    BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


# ---------------------------------------------------------------------------------- benchmark fixtures
# A stand-in for the fine-tuning notebook: same parameters, records the same keys, a deterministic
# "accuracy" that depends on model, task and seed, and fails on demand.
FAKE_FINETUNE = """
import zlib
from lmcourse.tracking import record_metrics
if fail:
    raise RuntimeError(f"deliberate failure for {task}")
h = zlib.crc32(f"{model}-{task}".encode()) % 1000 / 10000
acc = 0.7 + h + 0.01 * seed
metrics = {f"{task}/accuracy": acc, f"{task}/train_tokens_per_s": 1000.0 + seed, f"{task}/mfu": 0.1,
           f"{task}/peak_memory_bytes": 123456, f"{task}/train_seconds": 1.5, f"{task}/trainable_params": 1000}
if task == "mrpc":
    metrics.update({f"{task}/f1": acc + 0.05, f"{task}/combined_score": acc + 0.025})
record_metrics(metrics)
"""

GOOD_SPEC = """name: fake
notebook: 50_fake.ipynb
matrix:
  model: [minilm-l6]
  task: [sst2, mrpc]
  seed: [0, 1]
  profile: [smoke]
include:
  - {model: minilm-l6, task: rte, seed: 0, profile: smoke, fail: true}
tolerance: 0.01
"""


def write_spec(folder: Path, text: str, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def write_fake_notebook(path: Path, parameters: str, body: str) -> Path:
    """A two-cell notebook: ``parameters`` (the cell tagged ``parameters``) and ``body``, on the python3 kernel."""
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture
def bench_dir(tmp_path) -> Path:
    """A folder with the fake fine-tuning notebook ``50_fake.ipynb`` (specs written beside it find it)."""
    write_fake_notebook(tmp_path / "50_fake.ipynb",
                        'profile = None\nseed = 0\nmodel = "minilm-l6"\ntask = "sst2"\nfail = False', FAKE_FINETUNE)
    return tmp_path


@pytest.fixture(scope="session")
def smoke_bench_local(tmp_path_factory):
    """The shipped smoke spec run once with the local backend (real papermill runs of notebook 07)."""
    from lmcourse.bench import run_spec

    runs_dir = tmp_path_factory.mktemp("smoke-local")
    return run_spec("smoke", runs_dir=runs_dir, progress=False)
