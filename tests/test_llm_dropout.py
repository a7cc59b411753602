"""sft.train.dropout: residual-stream dropout through forward hooks, only while training."""

import pytest
import torch

from conrec.llm.model.toy import toy_tables
from conrec.llm.training.dropout import add_training_dropout, decoder_layers

from builders import tiny_policy


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_dropout_acts_in_training_mode_only_and_is_removable():
    _, _, sid_map = toy_tables()
    model, tok, _ = tiny_policy(sid_map)
    ids = torch.tensor([[3, 4, 5, 6, 7, 8]])
    model.eval()
    plain = _logits(model, ids)
    handles = add_training_dropout(model, 0.5)
    assert len(handles) == 1 + len(decoder_layers(model))  # the embeddings and each layer
    assert torch.equal(_logits(model, ids), plain)  # eval mode: valid scoring and inference see no dropout
    model.train()
    torch.manual_seed(0)
    a = _logits(model, ids)
    torch.manual_seed(1)
    b = _logits(model, ids)
    assert not torch.allclose(a, plain) and not torch.allclose(a, b)
    for h in handles:
        h.remove()
    assert torch.allclose(_logits(model, ids), plain, atol=1e-6)  # llama has no dropout of its own


def test_zero_dropout_adds_nothing_and_bad_values_or_models_are_refused():
    _, _, sid_map = toy_tables()
    model, _, _ = tiny_policy(sid_map)
    assert add_training_dropout(model, 0.0) == []
    with pytest.raises(ValueError, match="dropout must be in"):
        add_training_dropout(model, 1.0)
    with pytest.raises(TypeError, match="no decoder layer list"):
        add_training_dropout(torch.nn.Embedding(4, 2), 0.1)


def test_dropout_is_validated_by_the_config():
    from conrec.config import load_config
    from conrec.errors import ConfigError

    assert load_config(None, {"sft": {"train": {"dropout": 0.2}}}).sft.train.dropout == 0.2
    with pytest.raises(ConfigError, match="dropout"):
        load_config(None, {"sft": {"train": {"dropout": 1.5}}})
