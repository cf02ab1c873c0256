"""The cross-encoder like scorer: prompts, the untrained start, LoRA through peft, fitting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarec.like.cross_encoder import CrossEncoder, CrossEncoderConfig, build_prompts
from metarec.like.cross_encoder_fit import (
    LoraFitConfig,
    add_lora,
    fit_cross_encoder,
    predict_cross_encoder,
    tokenize,
)
from metarec.like.head import NUMERIC


@pytest.fixture(scope="module")
def minilm():
    from metarec.like.cross_encoder import load_encoder

    return load_encoder()  # the bundled all-MiniLM-L6-v2, offline


def _tiny_encoder():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    return BertModel(cfg).eval()


def test_prompt_from_the_template():
    cfg = CrossEncoderConfig(history_items=2, template="H: {history} | C: {candidate}")
    titles = ["A", "B", "C", "D"]
    prompts = build_prompts(
        cfg, titles, np.array([[0, 1, 2]]), np.array([[1.0, 4.5, 3.0]]), np.array([3])
    )
    assert prompts == ["H: B (4.5); C (3) | C: D"]
    with_text = build_prompts(
        cfg, titles, np.array([[0, 1]]), np.array([[5.0, 2.0]]), np.array([2]), ["a", "b", "c!"]
    )
    assert with_text == ["H: A (5); B (2) | C: c!"]


def test_config_names_a_bad_template():
    with pytest.raises(ValueError, match="candidate"):
        CrossEncoderConfig(template="only {history}")
    with pytest.raises(ValueError, match="item_template"):
        CrossEncoderConfig(item_template="{unknown}")
    with pytest.raises(ValueError, match="rank"):
        LoraFitConfig(rank=0)


def test_lora_with_b_zero_gives_the_base_output(minilm):
    encoder, tokenizer = minilm
    tokens = tokenize(tokenizer, ["Toy Story (4); Heat (2)", "a longer prompt " * 5], 32)
    numeric = torch.randn(2, len(NUMERIC))
    base = CrossEncoder(CrossEncoderConfig(), encoder)
    torch.nn.init.normal_(base.text_head.weight)  # make the text part count
    with torch.no_grad():
        before = base.score(tokens["input_ids"], tokens["attention_mask"], numeric)
    import copy

    lora = add_lora(copy.deepcopy(base), LoraFitConfig(layers=None))
    names = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert any("lora_B" in n for n in names) and all(
        "lora_" in n or not n.startswith("encoder.") for n in names
    )
    assert all(
        float(p.detach().abs().max()) == 0 for n, p in lora.named_parameters() if "lora_B" in n
    )
    after = predict_cross_encoder(lora, tokens, numeric)
    np.testing.assert_allclose(after, before.numpy(), atol=1e-5)


def test_untrained_cross_encoder_is_the_numeric_prior():
    model = CrossEncoder(CrossEncoderConfig(), _tiny_encoder())
    ids = torch.randint(0, 30522, (3, 7))
    numeric = torch.randn(3, len(NUMERIC))
    expected = 4.0 * numeric[:, 0] + numeric[:, 1] + 0.4
    with torch.no_grad():
        torch.testing.assert_close(model.score(ids, torch.ones_like(ids), numeric), expected)
        torch.testing.assert_close(model.score_numeric(numeric), expected)


def test_lora_fitting_lowers_the_loss():
    model = add_lora(
        CrossEncoder(CrossEncoderConfig(numeric=False), _tiny_encoder()),
        LoraFitConfig(layers=(1,), lr=1e-2),
    )
    ids = torch.randint(1000, 2000, (16, 6))
    ids[:8, 1] = 2000  # the label is which token sits in column 1
    ids[8:, 1] = 3000
    tokens = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    labels = torch.cat([torch.ones(8), torch.zeros(8)])
    numeric = torch.zeros(16, len(NUMERIC))
    res = fit_cross_encoder(model, tokens, numeric, labels, LoraFitConfig(epochs=15, lr=1e-2))
    assert res["steps"] == 15 and np.mean(res["losses"][-3:]) < 0.85 * res["losses"][0]
    scores = predict_cross_encoder(model, tokens, numeric)
    assert scores[:8].mean() > scores[8:].mean()
