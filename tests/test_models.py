"""lmcourse.models.resolve: offline MiniLM weights, Hub ids, local folders, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmcourse.errors import UnknownNameError
from lmcourse.models import KNOWN_MODELS, resolve


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
