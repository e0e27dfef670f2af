"""Checkers that cannot compare with one reference output: random masking (checked by its statistics) and open
exercises (checked for a well-formed recorded answer, then compared with the protocol's verdict)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from lmcourse.exercises.core import Exercise, Mistake

MASK_ID, VOCAB = 3, 1000
_ORIGINAL_IDS = "labels hold the ORIGINAL ids (input_ids before masking) at selected positions"
_CASES = (  # (name, batch, length, mlm_probability)
    ("batch 96 x 128, p=0.15", 96, 128, 0.15),
    ("batch of one, 9000 tokens, p=0.15", 1, 9000, 0.15),
    ("odd sizes 37 x 101, p=0.3", 37, 101, 0.3),
)


def _mlm_inputs(batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (batch, length), generator=g)
    special = torch.zeros(batch, length, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True  # [CLS] ... [SEP]
    lengths = torch.randint(length // 2, length + 1, (batch,), generator=g)
    for b, n in enumerate(lengths.tolist()):  # padded rows: [PAD] (id 0) is special too
        ids[b, n:] = 0
        special[b, n:] = True
        special[b, n - 1] = True
    ids[:, 0], ids[:, -1] = 1, 2
    return ids, special


def _stats(ids: torch.Tensor, special: torch.Tensor, out: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    sel = labels != -100
    n_sel = int(sel.sum())
    normal = ~special
    masked = sel & (out == MASK_ID)
    kept = sel & (out == ids)
    random_ = sel & ~masked & ~kept
    return {
        "rate": n_sel / max(1, int(normal.sum())), "n_sel": n_sel,
        "mask": int(masked.sum()) / max(1, n_sel), "kept": int(kept.sum()) / max(1, n_sel),
        "random": int(random_.sum()) / max(1, n_sel),
        "special_selected": int((sel & special).sum()), "special_changed": int(((out != ids) & special).sum()),
        "unselected_changed": int(((out != ids) & ~sel).sum()),
        "labels_wrong": int((sel & (labels != ids)).sum()),
        "out_of_vocab": int(((out < 0) | (out >= VOCAB)).sum()),
    }


def _within(x: float, p: float, n: int, sigmas: float = 5.0) -> bool:
    return abs(x - p) <= sigmas * math.sqrt(p * (1 - p) / max(1, n)) + 1e-9


def mlm_masking_checker(fn: Callable[..., Any], mistakes: Sequence[Mistake]) -> tuple[str | None, str, str | None,
                                                                                        str | None]:
    """Statistics of the learner's masking on three seeded batches (padding, odd sizes, a batch of one)."""
    hints = {m.name: m.hint for m in mistakes}
    for k, (name, batch, length, p) in enumerate(_CASES):
        ids, special = _mlm_inputs(batch, length, 5000 + k)
        res = fn(ids.clone(), special.clone(), MASK_ID, VOCAB, p, torch.Generator().manual_seed(77 + k))
        if not isinstance(res, tuple | list) or len(res) != 2:
            return name, f"expected (inputs, labels), got {type(res).__name__}", None, None
        out, labels = res
        for what, t in (("inputs", out), ("labels", labels)):
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(ids.shape):
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                return name, f"{what}: expected a tensor of shape {tuple(ids.shape)}, got {shape}", None, None
        s = _stats(ids, special, out, labels)
        head = f"{name}: "
        if int((labels == -100).sum()) == 0:
            m = "labels kept at every position"
            return name, f"{head}no label is -100; expected -100 at the {1 - p:.0%} of tokens not selected", hints[m], m
        if s["special_selected"] or s["special_changed"]:
            m = "special tokens can be selected"
            return name, (f"{head}{s['special_selected']} special tokens were selected and {s['special_changed']} "
                          "changed; expected none"), hints[m], m
        if s["labels_wrong"]:
            return name, (f"{head}{s['labels_wrong']} selected positions have a label that is not the original "
                          "token id"), _ORIGINAL_IDS, None
        if s["unselected_changed"]:
            m = "random tokens drawn outside the selection"
            return name, f"{head}{s['unselected_changed']} tokens that were not selected changed", hints[m], m
        if s["out_of_vocab"]:
            return name, f"{head}{s['out_of_vocab']} ids outside [0, vocab_size)", "draw random ids with " \
                "torch.randint(vocab_size, ...)", None
        if not _within(s["rate"], p, int((~special).sum())):
            return name, (f"{head}selected {s['rate']:.3f} of the non-special tokens; expected {p} "
                          "(within sampling error)"), "select each non-special token with probability " \
                "mlm_probability", None
        if s["mask"] > 0.97:
            m = "every selected token becomes [MASK]"
            return name, f"{head}{s['mask']:.1%} of the selected tokens became [MASK]; expected 80 %", hints[m], m
        if _within(s["random"], 0.02, s["n_sel"]) and _within(s["kept"], 0.18, s["n_sel"]):
            m = "the 10 % random is drawn from what [MASK] left, unscaled"
            return name, (f"{head}{s['random']:.1%} of the selected tokens got a random id and {s['kept']:.1%} "
                          "stayed; expected 10 % and 10 %"), hints[m], m
        for part, expect in (("mask", 0.8), ("random", 0.1), ("kept", 0.1)):
            if not _within(s[part], expect, s["n_sel"]):
                return name, (f"{head}{s[part]:.1%} of the selected tokens were {part}; expected {expect:.0%} "
                              "(80 % [MASK], 10 % random, 10 % kept)"), \
                    hints["every selected token becomes [MASK]"], None
    return None, ("the masking has BERT's statistics on every batch (selection rate, 80/10/10, labels, "
                  "specials)"), None, None


# --------------------------------------------------------------------------------------------- open exercises
PREDICTIONS = ("a better", "b better", "no difference")
_NO_PREDICTION = "write down the prediction BEFORE running: it is what makes the exercise teach"
_NOT_A_COMPARISON = ("pass the Comparison that lmcourse.spread.compare returns (its interval and liveness decide), "
                     "not a number you computed")


def protocol_outcome(comparison: Any) -> str:
    """What the protocol's verdict says, in the words of a prediction (or ``"not measured"``)."""
    if not comparison.measured:
        return "not measured"
    if not comparison.significant:
        return "no difference"
    return "a better" if comparison.better else "b better"


def _open_checker(fn: Callable[[], Any]) -> tuple[str | None, str, str | None, str | None]:
    from lmcourse.spread import Comparison

    answer = fn()
    if not isinstance(answer, dict):
        return "your answer", (f"expected a dict with prediction, why, comparison; got "
                               f"{type(answer).__name__}"), None, None
    unknown = sorted(set(answer) - {"prediction", "why", "comparison"})
    if unknown:
        return "your answer", f"unknown keys {unknown}; use prediction, why, comparison", None, None
    pred = answer.get("prediction")
    if pred not in PREDICTIONS:
        return "prediction", f"prediction must be one of {list(PREDICTIONS)}, got {pred!r}", _NO_PREDICTION, \
            "no prediction"
    why = answer.get("why")
    if not isinstance(why, str) or len(why.strip()) < 10:
        return "why", "give a sentence of why you expect that (why: a string of at least 10 characters)", None, None
    comparison = answer.get("comparison")
    if comparison is None:
        return None, (f"prediction recorded ({pred!r}); run both arms and add comparison=compare(...) to see what "
                      "the protocol says"), None, None
    if not isinstance(comparison, Comparison):
        return "comparison", (f"comparison must be what lmcourse.spread.compare returns, got "
                              f"{type(comparison).__name__}"), _NOT_A_COMPARISON, "a number instead of a Comparison"
    outcome = protocol_outcome(comparison)
    if outcome == "not measured":
        return None, (f"prediction {pred!r}; the protocol could not measure it ({comparison.verdict}). Use more "
                      "seeds or check that both arms beat the constant predictor"), None, None
    agree = "agrees with" if outcome == pred else "differs from"
    return None, f"your prediction {pred!r} {agree} the protocol's verdict: {comparison.verdict}", None, None


def open_exercise(*, id: str, chapter: int, title: str, statement: str, prediction_hint: str) -> Exercise:
    """An open exercise: change something, predict, run, compare. Its answer is a function returning a dict
    ``{"prediction": ..., "why": ..., "comparison": Comparison | None}``; the check validates it and, once a
    comparison is given, says whether the prediction agrees with the protocol's verdict."""

    def reference() -> dict[str, Any]:
        return {"prediction": "no difference", "why": f"A prediction to test, not a result: {prediction_hint}.",
                "comparison": None}

    reference.__doc__ = f"A well-formed answer to {id} before running the arms (no comparison yet)."
    return Exercise(id=id, chapter=chapter, title=title, statement=statement, reference=reference,
                    hint=f"return {{'prediction': one of {list(PREDICTIONS)}, 'why': '...', 'comparison': None or "
                         f"compare(...)}}. Background: {prediction_hint}",
                    kind="open", custom=_open_checker,
                    mistakes=[Mistake("no prediction", lambda: {"why": "because it should", "comparison": None},
                                      _NO_PREDICTION),
                              Mistake("a number instead of a Comparison",
                                      lambda: {"prediction": "a better", "why": "more capacity helps",
                                               "comparison": 0.02},
                                      _NOT_A_COMPARISON)])
