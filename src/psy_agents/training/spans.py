"""Span decoding in torch, on the device that computed the logits.

``best_spans`` scores every ``(start, end)`` with ``start <= end < start + max_answer`` as
``start[s] + end[e]`` and keeps the best per row. Only that band is built: a ``(B, T, L)``
tensor with ``L = min(max_answer, T)`` (``[b, s, d]`` scores ``(s, s + d)``), not the
``(B, T, T)`` square, and nothing is copied to the host here.
"""

from __future__ import annotations

from typing import Any

from psy_agents.lazy import lazy_import

torch = lazy_import("torch")


def best_spans(start: Any, end: Any, valid: Any, max_answer: int) -> tuple[Any, Any, Any]:
    """Best ``start <= end`` span per row with ``end - start < max_answer`` on valid tokens.

    Ties go to the smallest start, then the smallest end (the first in row-major order of
    the ``(start, end)`` square, as ``numpy.argmax`` over it would choose).

    Args:
        start, end: ``(B, T)`` float logits (one dtype); valid: ``(B, T)`` bool tensor
            (the tokens of the post).
        max_answer: the longest span in tokens (>= 1).

    Returns:
        ``(score, s, e)`` tensors of shape ``(B,)`` on the logits' device; score is
        ``-inf`` (and ``s = e = 0``) where a row has no valid token.
    """
    b, t = start.shape
    width = min(max_answer, t)
    s_score = start.masked_fill(~valid, float("-inf"))
    e_score = end.masked_fill(~valid, float("-inf"))
    # e_band[b, s, d] = end score of token s + d; past the window's end: -inf
    e_band = torch.nn.functional.pad(e_score, (0, width - 1), value=float("-inf"))
    e_band = e_band.unfold(1, width, 1)  # (B, T, L)
    pair = s_score.unsqueeze(-1) + e_band
    pair = pair.reshape(b, -1)
    flat = pair.argmax(dim=1)  # the first maximum: the smallest (s, d), i.e. (s, e)
    score = pair.gather(1, flat.unsqueeze(1)).squeeze(1)
    s = torch.div(flat, width, rounding_mode="floor")
    return score, s, s + flat % width
