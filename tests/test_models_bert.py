"""The from-scratch BERT against Hugging Face BertModel: tiny random configs and the real MiniLM-L6 weights."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, AutoTokenizer, BertForSequenceClassification
from transformers import BertConfig as HFBertConfig
from transformers import BertModel as HFBertModel

from lmcourse.errors import ArgumentError
from lmcourse.models import resolve
from lmcourse.models.bert import BertConfig, BertModel, bert_param_count

SENTENCES = [
    "The cat sat on the mat.",
    "Attention is all you need, or so the paper claims, at least for machine translation.",
    "Hi!",
]


def _hf_tiny(hidden=32, layers=2, heads=4, inter=48, seed=0, pooler=True) -> HFBertModel:
    torch.manual_seed(seed)
    cfg = HFBertConfig(vocab_size=101, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                       intermediate_size=inter, max_position_embeddings=40, type_vocab_size=3)
    model = HFBertModel(cfg, add_pooling_layer=pooler).eval()
    with torch.no_grad():  # biases are zero and LayerNorms (1, 0) after init: randomise them
        for name, p in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("hidden,layers,heads,inter", [(16, 1, 1, 20), (32, 2, 4, 48), (24, 3, 6, 40)])
def test_tiny_random_bert_matches_hf(hidden, layers, heads, inter):
    hf = _hf_tiny(hidden, layers, heads, inter, seed=hidden)
    ours = BertModel.from_hf(hf).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 101, (3, 11), generator=g)
    types = torch.randint(0, 3, (3, 11), generator=g)
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 2:] = 0
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
        out = ours(ids, attention_mask=mask, token_type_ids=types)
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.pooler_output, ref.pooler_output, atol=1e-5, rtol=0)
    # no mask == all ones
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).last_hidden_state, hf(input_ids=ids).last_hidden_state,
                                   atol=1e-5, rtol=0)


def test_state_dict_names_are_hf_names():
    hf = _hf_tiny()
    ours = BertModel(BertConfig.from_hf(hf.config))
    assert set(ours.state_dict()) == set(hf.state_dict())
    for k, v in hf.state_dict().items():
        assert ours.state_dict()[k].shape == v.shape, k


def test_no_pooler_and_classification_wrapper():
    hf = _hf_tiny(pooler=False)
    ours = BertModel.from_hf(hf).eval()
    assert ours.pooler is None
    ids = torch.randint(1, 101, (2, 6))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).last_hidden_state, hf(input_ids=ids).last_hidden_state,
                                   atol=1e-5, rtol=0)
    torch.manual_seed(0)
    clf = BertForSequenceClassification(HFBertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=20)).eval()
    ours = BertModel.from_hf(clf).eval()
    ids = torch.randint(1, 50, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).pooler_output, clf.bert(input_ids=ids).pooler_output, atol=1e-5, rtol=0)


def test_param_count_formula():
    for cfg in [BertConfig(vocab_size=101, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=48, max_position_embeddings=40, type_vocab_size=3),
                BertConfig(vocab_size=7, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=5, add_pooling_layer=False)]:
        assert bert_param_count(cfg) == sum(p.numel() for p in BertModel(cfg).parameters())
    with torch.device("meta"):
        n_hf = sum(p.numel() for p in HFBertModel(HFBertConfig()).parameters())
    assert bert_param_count(BertConfig()) == n_hf == 109_482_240  # BERT-base


def test_errors():
    with pytest.raises(ArgumentError):
        BertConfig(hidden_size=10, num_attention_heads=3)
    with pytest.raises(ArgumentError):
        BertConfig.from_hf(HFBertConfig(hidden_act="relu"))
    model = BertModel(BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=8, max_position_embeddings=4))
    with pytest.raises(ArgumentError):
        model(torch.zeros(1, 5, dtype=torch.long))


def test_minilm_real_weights_match_hf():
    path = resolve("minilm-l6")
    tok = AutoTokenizer.from_pretrained(path)
    hf = AutoModel.from_pretrained(path).eval()
    ours = BertModel.from_hf(hf).eval()
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any()  # padding is exercised
    with torch.no_grad():
        ref = hf(**batch)
        out = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.pooler_output, ref.pooler_output, atol=1e-5, rtol=0)
    # padding must not change the real tokens' states: the short sentence alone gives the same vectors
    alone = tok(SENTENCES[2:], return_tensors="pt")
    n = alone["input_ids"].size(1)
    with torch.no_grad():
        single = ours(alone["input_ids"], alone["attention_mask"]).last_hidden_state
    torch.testing.assert_close(single[0], out.last_hidden_state[2, :n], atol=1e-5, rtol=0)
