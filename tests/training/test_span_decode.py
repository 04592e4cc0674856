"""The torch span decoder picks what the numpy decoder it replaced picked, ties included.

``reference_best_spans`` is the former ``metrics.best_spans`` (O(B·T²) numpy), kept here
only as the reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from psy_agents.training.spans import best_spans


def reference_best_spans(start: np.ndarray, end: np.ndarray, valid: np.ndarray,
                         max_answer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    b, t = start.shape
    s_mask = np.where(valid, start, -np.inf)
    e_mask = np.where(valid, end, -np.inf)
    pair = s_mask[:, :, None] + e_mask[:, None, :]
    idx = np.arange(t)
    band = (idx[None, :] >= idx[:, None]) & (idx[None, :] - idx[:, None] < max_answer)
    pair = np.where(band[None], pair, -np.inf)
    flat = pair.reshape(b, -1).argmax(axis=1)
    score = pair.reshape(b, -1)[np.arange(b), flat]
    return score, flat // t, flat % t


def _decode(start: np.ndarray, end: np.ndarray, valid: np.ndarray, max_answer: int):
    score, s, e = best_spans(torch.from_numpy(start), torch.from_numpy(end),
                             torch.from_numpy(valid), max_answer)
    return score.numpy(), s.numpy(), e.numpy()


def test_best_span_respects_order_length_and_validity():
    start = np.array([[0.0, 5.0, 0.0, 0.0, 9.0]], dtype=np.float32)
    end = np.array([[0.0, 0.0, 9.0, 1.0, 0.0]], dtype=np.float32)
    valid = np.array([[False, True, True, True, False]])
    score, s, e = _decode(start, end, valid, max_answer=3)
    assert (int(s[0]), int(e[0]), float(score[0])) == (1, 2, 14.0)  # token 4 is not valid
    _, s, e = _decode(start, end, valid, max_answer=1)
    assert (int(s[0]), int(e[0])) == (2, 2)  # 0 + 9 beats 5 + 0: one-token spans only


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_answer", [1, 2, 3, 7, 16, 40])
def test_the_torch_decoder_matches_the_numpy_reference(seed, max_answer):
    """Random logits on a coarse grid (many ties), rows of random valid tokens, a row with
    none, and max_answer below, at and beyond the width."""
    rng = np.random.default_rng([seed, max_answer])
    b, t = 9, int(rng.integers(1, 24))
    start = rng.integers(-3, 4, size=(b, t)).astype(np.float32)
    end = rng.integers(-3, 4, size=(b, t)).astype(np.float32)
    if seed % 2:  # finer, continuous values: few ties, sums that round in float32
        start += rng.normal(size=(b, t)).astype(np.float32) * 1e-3
        end += rng.normal(size=(b, t)).astype(np.float32)
    valid = rng.random((b, t)) < 0.7
    valid[0] = False  # no valid token: score -inf, span (0, 0)
    valid[1] = True
    start[2], end[2] = 1.0, 1.0  # every span ties: the first, (s, e) = (first valid, same)
    got, want = _decode(start, end, valid, max_answer), reference_best_spans(
        start, end, valid, max_answer)
    assert np.array_equal(got[0], want[0])  # -inf == -inf; exact float32 sums otherwise
    assert np.array_equal(got[1], want[1]) and np.array_equal(got[2], want[2])
    assert np.isneginf(got[0][0]) and (got[1][0], got[2][0]) == (0, 0)
