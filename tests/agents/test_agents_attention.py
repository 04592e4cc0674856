"""Encoders run PyTorch's fused attention (SDPA), and our 4-D mask spares a sync per forward.

``new_encoder`` names ``attn_implementation="sdpa"`` (an older transformers defaults to eager
attention); a model class without SDPA is built with its default, with a warning naming it.
Given a 2-D padding mask, transformers asks ``mask.all()`` on every forward (a host sync);
``attention_mask_4d`` hands it the same mask already shaped ``(B, 1, 1, T)``.
"""

from __future__ import annotations

import types

import pytest
import torch
from transformers import AutoModel, BertConfig, BertModel

from psy_agents.agents.backbones import _with_sdpa, new_encoder, resolve_backbone
from psy_agents.agents.models import attention_mask_4d
from psy_agents.training.syncs import count_syncs


@pytest.mark.parametrize("backbone", ["tiny", "minilm"])
def test_encoders_are_built_with_sdpa(backbone, hand_tiny):
    source = hand_tiny if backbone == "tiny" else resolve_backbone("minilm")
    encoder = new_encoder(source, dropout=0.0)
    assert encoder.config._attn_implementation == "sdpa"


def test_sdpa_is_asked_for_even_where_the_config_says_eager():
    """A config saved (or defaulted, by an older transformers) with eager attention still
    gets SDPA: the choice is made by name, not left to the library's default."""
    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, vocab_size=100)
    config._attn_implementation = "eager"
    assert _with_sdpa(AutoModel, config).config._attn_implementation == "sdpa"


def test_a_class_without_sdpa_falls_back_to_its_default_with_a_warning():
    class NoSdpaBert(BertModel):
        _supports_sdpa = False

    auto = types.SimpleNamespace(from_config=NoSdpaBert._from_config)
    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, vocab_size=100)
    with pytest.warns(UserWarning, match=r"backbone BertConfig: SDPA attention unavailable "
                                         r"\(NoSdpaBert does not support .*\); using its default"):
        model = _with_sdpa(auto, config)
    assert model.config._attn_implementation == "eager"
    # eager attention adds the mask to the scores: the 2-D mask is passed on as it is
    mask = torch.ones(2, 5, dtype=torch.long)
    assert attention_mask_4d(model, mask) is mask


def test_the_4d_mask_gives_the_same_states_without_a_sync(hand_tiny):
    encoder = new_encoder(hand_tiny, dropout=0.0).eval()
    torch.manual_seed(0)
    ids = torch.randint(5, 300, (3, 20))
    mask = torch.ones(3, 20, dtype=torch.long)
    mask[1, 12:], mask[2, 5:] = 0, 0
    with torch.no_grad():
        with count_syncs() as plain_syncs:
            plain = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        with count_syncs() as ours_syncs:
            ours = encoder(input_ids=ids,
                           attention_mask=attention_mask_4d(encoder, mask)).last_hidden_state
    assert len(plain_syncs) >= 1  # transformers' own mask.all() check, once per forward
    assert len(ours_syncs) == 0, ours_syncs.by_site()
    real = mask.bool()
    assert torch.allclose(plain[real], ours[real], atol=1e-6)
