"""The agent table builds real, different models; options change parameter shapes."""

from __future__ import annotations

import pytest
import torch

from psy_agents.agents.backbones import TINY_SHAPE
from psy_agents.agents.registry import AGENTS, get_agent
from psy_agents.errors import ConfigError
from psy_agents.training.config import TrainConfig


def _shapes(agent: str, source: str, **opts) -> dict[str, tuple[int, ...]]:
    cfg = TrainConfig(agent=agent, **opts)
    model = get_agent(agent).build_model(cfg, source)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_head_depth_and_width_change_the_parameters(agent, hand_tiny):
    base = _shapes(agent, hand_tiny, head_layers=1, head_hidden=32)
    wide = _shapes(agent, hand_tiny, head_layers=1, head_hidden=48)
    deep = _shapes(agent, hand_tiny, head_layers=2, head_hidden=32)
    assert base != wide and base != deep and set(deep) > set(base)
    cls = "cls" in AGENTS[agent].heads
    head = "cls_head" if cls else "span_head"
    # the span head reads each token's state beside a BiGRU's: 2 x the encoder width
    width = TINY_SHAPE["hidden_size"] * (1 if cls else 2)
    assert base[f"{head}.0.weight"] == (32, width)
    assert wide[f"{head}.0.weight"] == (48, width)


def test_heads_and_encoders_per_agent(hand_tiny):
    counts = {}
    for name in AGENTS:
        shapes = _shapes(name, hand_tiny)
        counts[name] = (any(k.startswith("cls_head") for k in shapes),
                        any(k.startswith("span_head") for k in shapes),
                        any(k.startswith("encoders.1.") for k in shapes),
                        "fusion.weight" in shapes)
    assert counts == {"criteria": (True, False, False, False),
                      "evidence": (False, True, False, False),
                      "share": (True, True, False, False),
                      "joint": (True, True, True, True)}


@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_pooling_changes_the_output(agent, hand_tiny):
    batch = {"input_ids": torch.tensor([[2, 10, 11, 3, 12, 13, 14, 3, 0, 0]]),
             "attention_mask": torch.tensor([[1] * 8 + [0, 0]]),
             "token_type_ids": torch.tensor([[0] * 4 + [1] * 6]),
             "match": torch.tensor([[0] * 5 + [1] + [0] * 4])}
    outs = []
    for pooling in ("cls", "mean", "max"):
        torch.manual_seed(0)
        cfg = TrainConfig(agent=agent, pooling=pooling, dropout=0.0)
        model = get_agent(agent).build_model(cfg, hand_tiny).eval()
        with torch.no_grad():
            outs.append(model(batch))
    key = "cls" if "cls" in outs[0] else "start"
    assert not torch.allclose(outs[0][key], outs[1][key])
    assert not torch.allclose(outs[1][key], outs[2][key])
    if "start" in outs[0]:
        assert outs[0]["start"][0, 8:].max() < -1e3  # padding is never an answer


def test_the_encoder_weights_are_the_pretrained_ones_and_copied_per_run(hand_tiny):
    from psy_agents.agents.backbones import load_pretrained

    _, state = load_pretrained(hand_tiny)
    a = get_agent("criteria").build_model(TrainConfig(), hand_tiny)
    b = get_agent("criteria").build_model(TrainConfig(), hand_tiny)
    key = "embeddings.word_embeddings.weight"
    assert torch.equal(a.encoders[0].state_dict()[key], state[key])
    with torch.no_grad():
        a.encoders[0].embeddings.word_embeddings.weight.add_(1.0)
    assert torch.equal(b.encoders[0].state_dict()[key], state[key])  # b did not see a's change


def test_unknown_agent_is_one_config_error():
    with pytest.raises(ConfigError, match="unknown agent 'critera'.*criteria, evidence, share"):
        get_agent("critera")


@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_criterion_match_adds_an_input_embedding_that_changes_the_output(agent, hand_tiny):
    with_match = _shapes(agent, hand_tiny, criterion_match=True)
    without = _shapes(agent, hand_tiny, criterion_match=False)
    assert with_match["match.weight"] == (3, TINY_SHAPE["hidden_size"])
    assert "match.weight" not in without and set(with_match) - set(without) == {"match.weight"}
    batch = {"input_ids": torch.tensor([[2, 10, 11, 3, 12, 10, 14, 3]]),
             "attention_mask": torch.ones(1, 8, dtype=torch.long),
             "token_type_ids": torch.tensor([[0] * 4 + [1] * 4]),
             "match": torch.tensor([[0, 0, 0, 0, 0, 2, 1, 0]])}
    torch.manual_seed(0)
    cfg = TrainConfig(agent=agent, criterion_match=True, dropout=0.0)
    model = get_agent(agent).build_model(cfg, hand_tiny).eval()
    key = "cls" if "cls" in AGENTS[agent].heads else "start"
    with torch.no_grad():
        start = model(batch)[key].clone()  # zero-initialized: no effect yet
        model.match.weight[1:].normal_()
        moved = model(batch)[key]
        unmatched = model({**batch, "match": torch.zeros_like(batch["match"])})[key]
    assert torch.allclose(start, unmatched)
    assert not torch.allclose(moved, unmatched)


@pytest.mark.parametrize("agent", ["evidence", "share", "joint"])
def test_span_context_adds_a_bigru_before_the_span_head(agent, hand_tiny):
    width = TINY_SHAPE["hidden_size"]
    gru = _shapes(agent, hand_tiny, span_context="gru", head_hidden=32)
    plain = _shapes(agent, hand_tiny, span_context="none", head_hidden=32)
    for direction in ("", "_reverse"):
        assert gru[f"span_context.gru.weight_ih_l0{direction}"] == (3 * (width // 2), width)
    assert gru["span_head.0.weight"] == (32, 2 * width)
    assert plain["span_head.0.weight"] == (32, width)
    assert not any(k.startswith("span_context") for k in plain)


def test_the_span_context_sees_its_halo_and_nothing_beyond_its_chunk():
    """The BiGRU reads chunks of 4 tokens with 2 tokens of halo (tiny here, 32 and 16 in
    the models): an input change reaches every token within the halo of it, both ways, and
    none beyond the chunk + halo reach; padding past the window's length is never read."""
    from psy_agents.agents.models import SpanContext

    torch.manual_seed(0)
    ctx = SpanContext(8, chunk=4, halo=2).eval()
    x = torch.randn(1, 16, 8)
    mask = torch.ones(1, 16, dtype=torch.long)
    moved = x.clone()
    moved[0, 9] += 1.0  # token 9: chunk [8, 12), read with halo as [6, 14)
    with torch.no_grad():
        base, changed = ctx(x, mask)[0, :, 8:], ctx(moved, mask)[0, :, 8:]
    differs = [bool(not torch.allclose(base[i], changed[i], atol=1e-7)) for i in range(16)]
    # the chunks holding token 9 in their read range: [4, 8) reads [2, 10), [8, 12) reads
    # [6, 14), [12, 16) reads [10, 18): so tokens 4..11 see it, 0..3 and 12..15 do not
    assert differs == [False] * 4 + [True] * 8 + [False] * 4
    # the halo covers 2 tokens each way for every token: 7 and 11 (chunk edges) see 9
    assert differs[7] and differs[11]
    pad = mask.clone()
    pad[0, 12:] = 0
    noise = x.clone()
    noise[0, 12:] = 100.0  # whatever sits in the padding
    with torch.no_grad():
        assert torch.allclose(ctx(x, pad)[0, :12], ctx(noise, pad)[0, :12])


def test_the_span_gru_runs_in_fp32_with_autocast_off_under_bf16_autocast():
    """Autocast's per-device op lists decide a GRU's dtype (CUDA's casts cuDNN's RNN to a
    16-bit type; the CPU's leaves it alone), so the model turns autocast off around it:
    checked where the GRU runs, under bf16 autocast on this machine's device, by what the
    GRU sees (autocast state, input and weight dtypes) and what it returns. The same code
    path runs on CUDA, where no GPU test can run here."""
    from psy_agents.agents.models import SpanContext

    ctx = SpanContext(8, chunk=4, halo=2)
    seen: dict[str, object] = {}

    def before(module, args):
        seen["autocast"] = torch.is_autocast_enabled("cpu")
        seen["input"] = args[0].dtype

    def after(module, args, output):
        seen["output"] = output[0].dtype

    ctx.gru.register_forward_pre_hook(before)
    ctx.gru.register_forward_hook(after)
    states = torch.randn(2, 10, 8, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        out = ctx(states, torch.ones(2, 10, dtype=torch.long))
    assert seen == {"autocast": False, "input": torch.float32, "output": torch.float32}
    assert {p.dtype for p in ctx.gru.parameters()} == {torch.float32}
    assert out.dtype == torch.bfloat16 and out.shape == (2, 10, 16)  # back in the states' dtype


def test_dropout_and_attention_dropout_reach_the_encoder(hand_tiny):
    cfg = TrainConfig(dropout=0.2, attention_dropout=0.05)
    enc = get_agent("criteria").build_model(cfg, hand_tiny).encoders[0]
    assert enc.config.hidden_dropout_prob == 0.2
    assert enc.config.attention_probs_dropout_prob == 0.05
    assert TrainConfig().attention_dropout == 0.0  # off by default (CPU cost, see config)


@pytest.mark.parametrize("agent", ["share", "joint"])
def test_span_branch_on_the_loss_rows_only_gives_the_same_loss_and_gradients(agent, hand_tiny):
    """In training only the span-mask rows go through the span branch (the joint agent's
    second encoder, the GRU), trimmed to their own length. Same loss, same gradients as
    running every row at full width: a batch of 3 windows, the masked one the longest."""
    torch.manual_seed(0)
    ids = torch.randint(5, 60, (3, 12))
    attn = torch.tensor([[1] * 12, [1] * 7 + [0] * 5, [1] * 9 + [0] * 3])
    ok = torch.zeros(3, 12, dtype=torch.bool)
    ok[:, 0] = True
    ok[1, 0], ok[1, 4] = False, True
    batch = {"input_ids": ids * attn, "attention_mask": attn,
             "token_type_ids": torch.tensor([[0] * 4 + [1] * 8] * 3),
             "match": torch.tensor([[0] * 5 + [1, 2] + [0] * 5] * 3),
             "cls_target": torch.tensor([0.0, 1.0, 0.0]), "start_ok": ok, "end_ok": ok,
             # rows 1 and 2 (an index computed on the host by collate), 9 tokens wide
             "span_rows": torch.tensor([1, 2]), "span_width": 9}
    spec = get_agent(agent)
    cfg = TrainConfig(agent=agent, dropout=0.0)
    model = spec.build_model(cfg, hand_tiny)
    for p in model.parameters():  # zero-initialized parts would hide a wrong gradient
        torch.nn.init.normal_(p, std=0.05) if p.ndim > 1 else None

    def loss_and_grads(subset: bool):
        model.zero_grad()
        if subset:
            out = model(batch)
        else:  # the span branch on every row: a batch without span_rows
            out = model({k: v for k, v in batch.items() if k not in ("span_rows", "span_width")})
        loss = spec.loss(out, batch, cfg)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                               if p.grad is not None}

    loss_sub, grads_sub = loss_and_grads(True)
    loss_full, grads_full = loss_and_grads(False)
    assert torch.allclose(loss_sub, loss_full, atol=1e-6)
    assert grads_sub.keys() == grads_full.keys()
    assert any(n.startswith("span_context") for n in grads_sub)
    for name in grads_full:
        assert torch.allclose(grads_sub[name], grads_full[name], atol=1e-6), name


@pytest.mark.parametrize("agent", ["evidence", "joint"])
def test_a_windows_span_logits_do_not_depend_on_the_batch_padding(agent, hand_tiny):
    """A window scored alone or beside a longer one (more padding) gets the same start/end
    logits: the BiGRU's chunks sit at fixed positions and read zeros past the window's
    length. (An earlier BiGRU run over the padded batch read the padding first.)"""
    torch.manual_seed(0)
    ids = torch.randint(5, 60, (2, 14))
    attn = torch.tensor([[1] * 14, [1] * 6 + [0] * 8])
    batch = {"input_ids": ids * attn, "attention_mask": attn,
             "token_type_ids": torch.zeros(2, 14, dtype=torch.long),
             "match": torch.zeros(2, 14, dtype=torch.long)}
    model = get_agent(agent).build_model(TrainConfig(agent=agent, pooling="mean"),
                                         hand_tiny).eval()
    alone = {k: v[1:, :6] for k, v in batch.items()}
    with torch.no_grad():
        both, one = model(batch), model(alone)
    for key in ("start", "end"):
        assert torch.allclose(both[key][1, :6], one[key][0], atol=1e-5), key
