"""lmcourse.models.resolve: offline MiniLM weights, Hub ids, local folders, the published scratch BERT, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmcourse.errors import DataUnavailableError, UnknownNameError
from lmcourse.models import KNOWN_MODELS, SCRATCH_BERT_NAMES, publish_scratch_bert, resolve, scratch_bert_dir
from lmcourse.paths import CHECKPOINTS_ENV, DEFAULT_CHECKPOINTS_DIR


def test_minilm_resolves_to_shipped_weights_that_load_offline():
    from transformers import AutoConfig, AutoTokenizer

    path = Path(resolve("minilm-l6"))
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    config = AutoConfig.from_pretrained(path)
    assert (config.model_type, config.num_hidden_layers, config.hidden_size) == ("bert", 6, 384)
    tok = AutoTokenizer.from_pretrained(path)
    assert tok("Hello world")["input_ids"][0] == tok.cls_token_id
    assert resolve("MiniLM-L6") == str(path)


def test_hub_ids_and_local_folders_pass_through(tmp_path):
    assert resolve("google-bert/bert-base-uncased") == "google-bert/bert-base-uncased"
    assert resolve("bert-base-uncased") == "google-bert/bert-base-uncased"
    assert resolve(str(tmp_path)) == str(tmp_path)


@pytest.mark.parametrize("bad", ["minilm-l12", "", "a/b/c", "./missing-folder"])
def test_unknown_names_list_the_known_ones(bad):
    with pytest.raises(UnknownNameError) as err:
        resolve(bad)
    for name in KNOWN_MODELS:
        assert name in str(err.value)


# ------------------------------------------------------------------ the BERT notebook 05 publishes
def _tiny_bert_and_tokenizer():
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    tok = AutoTokenizer.from_pretrained(resolve("minilm-l6"))
    config = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    return BertForMaskedLM(config), tok


@pytest.fixture
def checkpoints(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "checkpoints"
    monkeypatch.setenv(CHECKPOINTS_ENV, str(folder))
    return folder


def test_scratch_bert_names_look_in_the_checkpoints_folder_of_the_environment(checkpoints, monkeypatch):
    assert scratch_bert_dir("cpu") == checkpoints / "bert-mlm-cpu"
    assert scratch_bert_dir("smoke") == checkpoints / "bert-mlm-smoke"
    monkeypatch.delenv(CHECKPOINTS_ENV)
    assert scratch_bert_dir("gpu") == DEFAULT_CHECKPOINTS_DIR / "bert-mlm-gpu"  # read at call time
    with pytest.raises(UnknownNameError, match="unknown profile 'laptop'"):
        scratch_bert_dir("laptop")


@pytest.mark.parametrize(("name", "profile"), sorted(SCRATCH_BERT_NAMES.items()))
def test_a_missing_scratch_bert_names_the_command_that_makes_it(checkpoints, name, profile):
    with pytest.raises(DataUnavailableError) as err:
        resolve(name)
    message = str(err.value)
    assert f"`lmcourse run notebooks/05_pretraining_mlm.ipynb --profile {profile}`" in message
    assert str(checkpoints / f"bert-mlm-{profile}") in message
    assert KNOWN_MODELS[name].producer == ("05_pretraining_mlm", profile)
    assert KNOWN_MODELS[name].command == f"lmcourse run notebooks/05_pretraining_mlm.ipynb --profile {profile}"


def test_published_scratch_bert_resolves_and_loads_for_finetuning(checkpoints):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model, tok = _tiny_bert_and_tokenizer()
    folder = publish_scratch_bert(model, tok, "smoke")
    assert folder == checkpoints / "bert-mlm-smoke"
    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= {p.name for p in folder.iterdir()}
    assert resolve("scratch-bert-smoke") == str(folder)
    with pytest.raises(DataUnavailableError):
        resolve("scratch-bert")  # the cpu profile's is another folder
    clf = AutoModelForSequenceClassification.from_pretrained(resolve("scratch-bert-smoke"), num_labels=2)
    assert clf.config.hidden_size == 16 and AutoTokenizer.from_pretrained(folder).vocab_size == tok.vocab_size
    # publishing again replaces it, and leaves no temporary or old folder behind
    model.config.hidden_act = "relu"
    publish_scratch_bert(model, tok, "smoke")
    assert [p.name for p in checkpoints.iterdir()] == ["bert-mlm-smoke"]
    assert '"relu"' in (folder / "config.json").read_text()


class _BrokenTokenizer:
    def save_pretrained(self, folder):
        (Path(folder) / "tokenizer_config.json").write_text("{")  # half-written ...
        raise OSError("disk full")  # ... then the write fails


def test_a_failed_publish_leaves_nothing_half_written(checkpoints):
    model, tok = _tiny_bert_and_tokenizer()
    with pytest.raises(OSError, match="disk full"):
        publish_scratch_bert(model, _BrokenTokenizer(), "cpu")
    assert list(checkpoints.iterdir()) == []  # no bert-mlm-cpu, no temporary folder
    with pytest.raises(DataUnavailableError):
        resolve("scratch-bert")
    # with a model already published, a failed publish keeps it as it was
    folder = publish_scratch_bert(model, tok, "cpu")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(OSError, match="disk full"):
        publish_scratch_bert(model, _BrokenTokenizer(), "cpu")
    assert [p.name for p in checkpoints.iterdir()] == ["bert-mlm-cpu"]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert resolve("scratch-bert") == str(folder)
