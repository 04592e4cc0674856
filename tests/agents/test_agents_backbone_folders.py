"""Backbone folders by path: a BERT-family folder (WordPiece, token types) and a
RoBERTa-family one (byte-level BPE, one token type, padding id 1, positions offset by the
padding id) both load offline and train every head.

The real checkpoints (bert-base, roberta-base, MentalBERT / MentalRoBERTa) cannot be
downloaded here, so each family is stood in for by a folder of the same architecture and
tokenizer kind at a micro size (hidden 32, one layer, random weights): what differs
between families — the tokenizer files, token types, special tokens, position offsets —
is what these folders exercise; the size is not.
"""

from __future__ import annotations

import math

import pytest

from psy_agents.training.config import TrainConfig
from psy_agents.training.run import run_training
from tests.training.helpers import HandData, corpus_texts, sleep_pairs

DATA = HandData(train=sleep_pairs(16, 0), val=sleep_pairs(6, 1), test=())
MICRO = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
         "intermediate_size": 64}


@pytest.fixture(scope="module")
def roberta_folder(tmp_path_factory) -> str:
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    root = tmp_path_factory.mktemp("roberta")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus_texts(), vocab_size=600,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(root))
    tok = RobertaTokenizerFast(vocab_file=str(root / "vocab.json"),
                               merges_file=str(root / "merges.txt"))
    tok.save_pretrained(root)
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=len(tok), max_position_embeddings=514, type_vocab_size=1,
                           pad_token_id=tok.pad_token_id, **MICRO)
    RobertaModel(config).save_pretrained(root)
    return str(root)


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory) -> str:
    import torch
    from transformers import BertConfig, BertModel

    from psy_agents.agents.backbones import build_tiny_backbone

    root = build_tiny_backbone(corpus_texts(), tmp_path_factory.mktemp("bert") / "m",
                               vocab_size=400)
    config = BertConfig.from_pretrained(root)
    config.update(MICRO)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(root)
    return str(root)


@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("agent", ["criteria", "joint"])
def test_a_backbone_folder_of_each_family_trains_every_head(family, agent, request):
    folder = request.getfixturevalue(f"{family}_folder")
    res = run_training(TrainConfig(agent=agent, backbone=folder, max_length=64, stride=16,
                                   epochs=1, batch_size=8, device="cpu"), DATA)
    assert res.stopped == "completed" and res.epochs_run == 1
    record = res.history[0]
    assert math.isfinite(record.train_loss) and record.train_loss > 0
    assert 0.0 <= res.best_value <= 1.0
    heads = {"symptom_macro_f1", "span_f1"} if agent == "joint" else {"symptom_macro_f1"}
    assert heads <= set(res.metrics)
