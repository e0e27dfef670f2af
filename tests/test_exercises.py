"""The chapters' exercises: every checker passes the course's reference, fails the mistakes learners make with the
hint meant for each, and the API around them (ids, headless runs, progress, the command line) behaves."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmcourse import exercises
from lmcourse.errors import ArgumentError
from lmcourse.exercises import references as ref
from lmcourse.exercises.catalog import EXERCISES


@pytest.fixture(autouse=True)
def _learner_session(monkeypatch, tmp_path):
    """Each test is a learner's session (not headless) with its own progress file, on one torch thread."""
    monkeypatch.setenv(exercises.MODE_ENV, "mine")
    monkeypatch.setenv(exercises.PROGRESS_ENV, str(tmp_path / "progress.json"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _check(id, fn):
    return exercises.check(id, fn, echo=False)


# ------------------------------------------------------------------------------------------ the registry
def test_every_chapter_has_at_least_two_exercises():
    chapters = {c: [e.id for e in EXERCISES if e.chapter == c] for c in range(1, 15)}
    assert all(len(ids) >= 2 for ids in chapters.values()), chapters
    assert len(EXERCISES) >= 28
    ids = [e.id for e in EXERCISES]
    assert len(ids) == len(set(ids))
    for e in EXERCISES:
        assert e.id.startswith(f"{e.chapter:02d}."), e.id
        assert e.statement and e.hint and e.title
        assert len(e.mistakes) >= 2, f"{e.id} recognises fewer than 2 mistakes"
        assert len({m.hint for m in e.mistakes}) == len(e.mistakes), f"{e.id}: two mistakes share a hint"


@pytest.mark.parametrize("ex", EXERCISES, ids=lambda e: e.id)
def test_reference_passes(ex):
    result = _check(ex.id, ex.reference)
    assert result.passed, result.message
    assert result.message.startswith("✓")


MISTAKES = [(e, m) for e in EXERCISES for m in e.mistakes]


@pytest.mark.parametrize(("ex", "mistake"), MISTAKES, ids=lambda x: getattr(x, "id", None) or x.name)
def test_each_mistake_fails_with_its_own_hint(ex, mistake):
    result = _check(ex.id, mistake.impl)
    assert not result.passed
    assert result.hint == mistake.hint, result.message
    assert mistake.hint in result.message and result.case in result.message


# ------------------------------------------------------------- wrong answers written as a learner writes them
def _attention_no_scale(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1) @ v


def _attention_mask_wrong_side(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores[mask.expand_as(scores)] = float("-inf")
    return torch.softmax(scores, dim=-1) @ v


def _clm_loss_unshifted(logits, labels):
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten())


def _kd_with_T(student_logits, teacher_logits, labels, temperature=2.0, alpha=0.5):
    soft = F.kl_div(F.log_softmax(student_logits / temperature, -1), F.softmax(teacher_logits / temperature, -1),
                    reduction="batchmean") * temperature
    mask = labels != -100
    return alpha * soft + (1 - alpha) * F.cross_entropy(student_logits[mask], labels[mask])


def _kd_summed(student_logits, teacher_logits, labels, temperature=2.0, alpha=0.5):
    soft = F.kl_div(F.log_softmax(student_logits / temperature, -1), F.softmax(teacher_logits / temperature, -1),
                    reduction="sum") * temperature**2
    mask = labels != -100
    return alpha * soft + (1 - alpha) * F.cross_entropy(student_logits[mask], labels[mask])


def _int8_per_tensor(weight, bits=8):
    qmax = 2 ** (bits - 1) - 1
    scale = weight.abs().max() / qmax
    return torch.round(weight / scale).clamp(-qmax, qmax).to(torch.int8), scale.repeat(weight.shape[0])


def _pool_sum(hidden, attention_mask):
    return (hidden * attention_mask.unsqueeze(-1)).sum(dim=1)


def _lora_unscaled(x, weight, bias, A, B, alpha):
    out = F.linear(x, weight, bias)
    return out + F.linear(F.linear(x, A), B)


def _bwt_backwards(R):
    R = np.array(R)
    return R[-1].mean(), np.mean(np.diag(R)[:-1] - R[-1, :-1])


def _sdpa_divided_by_dk(q, k, v, mask=None):
    scores = torch.einsum("...qd,...kd->...qk", q, k) / q.shape[-1]
    if mask is not None:
        scores = scores.masked_fill(mask.logical_not(), -torch.inf)
    return scores.softmax(-1) @ v


HANDWRITTEN = [
    ("02.sdpa", _attention_no_scale, "scores are not divided by √d_k"),
    ("02.sdpa", _attention_mask_wrong_side, "the mask is on the wrong side"),
    ("02.sdpa", _sdpa_divided_by_dk, "not by d_k"),
    ("06.causal_lm_loss", _clm_loss_unshifted, "labels not shifted"),
    ("11.kd_loss", _kd_with_T, "by T², not T"),
    ("11.kd_loss", _kd_summed, "batch MEAN"),
    ("11.int8_per_channel", _int8_per_tensor, "per-tensor scale where per-channel is asked"),
    ("14.mean_pool", _pool_sum, "the sum grows"),
    ("08.lora_forward", _lora_unscaled, "alpha / r"),
    ("13.acc_bwt", _bwt_backwards, "forgetting makes it negative"),
]


@pytest.mark.parametrize(("id", "fn", "words"), HANDWRITTEN, ids=[f"{i}-{f.__name__}" for i, f, _ in HANDWRITTEN])
def test_handwritten_wrong_answers_get_the_hint_for_their_mistake(id, fn, words):
    result = _check(id, fn)
    assert not result.passed
    assert words in result.hint, result.message
    assert "expected" in result.message and "got" in result.message


def test_the_message_names_the_case_and_expected_vs_got_shape():
    def wrong_shape(q, k, v, mask=None):
        return (q @ k.transpose(-2, -1)).softmax(-1)  # the weights, not the output

    result = _check("02.sdpa", wrong_shape)
    assert not result.passed
    assert "B=2, T=5, d=8, no mask" in result.message
    assert "shape: expected (2, 5, 8), got (2, 5, 5)" in result.message


def test_an_unwritten_answer_and_a_crashing_answer_are_failed_checks_not_tracebacks():
    def stub(q, k, v, mask=None):
        raise NotImplementedError

    def crash(q, k, v, mask=None):
        return q @ k  # wrong inner dimensions

    assert "not written yet" in _check("02.sdpa", stub).message
    crashed = _check("02.sdpa", crash)
    assert not crashed.passed and "raised RuntimeError" in crashed.message


def test_mlm_masking_checker_reads_the_statistics():
    def labels_are_inputs(input_ids, special_tokens_mask, mask_token_id, vocab_size, mlm_probability=0.15,
                          generator=None):
        sel = (torch.rand(input_ids.shape, generator=generator) < mlm_probability) & ~special_tokens_mask
        out = input_ids.clone()
        out[sel] = mask_token_id
        labels = torch.full_like(input_ids, -100)
        labels[sel] = out[sel]  # the masked input, not the original id
        return out, labels

    result = _check("05.mlm_masking", labels_are_inputs)
    assert not result.passed and "ORIGINAL ids" in result.hint


def test_open_exercise_validates_the_answer_and_reads_the_verdict():
    from lmcourse.spread import compare

    assert not _check("08.open_lora_rank", lambda: {"prediction": "maybe", "why": "no idea at all"}).passed
    c = compare([0.80, 0.82, 0.81], [0.70, 0.71, 0.69], names=("r1", "r8"), paired=True, chance=0.5)
    agree = _check("08.open_lora_rank", lambda: {"prediction": "a better", "why": "fewer weights, less overfit",
                                                 "comparison": c})
    assert agree.passed and "agrees with" in agree.message
    differ = _check("08.open_lora_rank", lambda: {"prediction": "b better", "why": "more rank, more capacity",
                                                  "comparison": c})
    assert differ.passed and "differs from" in differ.message


# ------------------------------------------------------------------- the references equal the libraries
def test_causal_lm_loss_is_transformers_labels_equal_input_ids():
    from transformers.loss.loss_utils import ForCausalLMLoss

    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(3, 7, 11, generator=g), torch.randint(0, 11, (3, 7), generator=g)
    labels[2, 5:] = -100
    expected = ForCausalLMLoss(logits, labels, vocab_size=11)
    torch.testing.assert_close(ref.causal_lm_loss(logits, labels), expected, rtol=1e-6, atol=1e-6)


def test_ig_riemann_is_captums_riemann_middle():
    from captum.attr import IntegratedGradients

    g = torch.Generator().manual_seed(1)
    w = torch.randn(6, 3, generator=g)

    def f(z):
        return torch.tanh(z @ w).sum(-1)

    x, base = torch.randn(1, 6, generator=g), torch.zeros(1, 6)
    expected = IntegratedGradients(f).attribute(x, baselines=base, n_steps=16, method="riemann_middle")
    torch.testing.assert_close(ref.ig_riemann(f, x[0], base[0], 16), expected[0], rtol=1e-5, atol=1e-6)


def test_benjamini_hochberg_is_the_step_up_rule():
    p = [0.02, 0.021, 0.03, 0.04, 0.5]
    m, q = len(p), 0.05
    order = np.argsort(p)
    k = max((r for r in range(1, m + 1) if p[order[r - 1]] <= r / m * q), default=0)
    expected = [bool(i in set(order[:k])) for i in range(m)]
    assert ref.benjamini_hochberg(p, q) == expected == [True, True, True, True, False]


def test_mlm_reference_is_the_course_collator():
    ids = torch.randint(5, 50, (4, 30))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = True
    out1, lab1 = ref.mlm_mask_tokens(ids, special, 3, 50, 0.15, torch.Generator().manual_seed(5))
    out2, lab2 = ref.mlm_mask_tokens(ids, special, 3, 50, 0.15, torch.Generator().manual_seed(5))
    assert torch.equal(out1, out2) and torch.equal(lab1, lab2)  # seeded by the generator
    assert (lab1[special] == -100).all()
    assert ref._word_level_tokenizer(50, 3).mask_token_id == 3 and len(ref._word_level_tokenizer(50, 3)) == 50


# ------------------------------------------------------------------------------------- ids, hints, solutions
def test_unknown_id_is_one_clear_error_listing_the_ids():
    with pytest.raises(ArgumentError, match=r"unknown exercise 'nope'.*02\.sdpa.*14\.mean_pool"):
        exercises.check("nope", lambda: None)
    for call in (exercises.hint, exercises.solution, exercises.solution_for_headless):
        with pytest.raises(ArgumentError, match="unknown exercise"):
            call("02.nope")
    with pytest.raises(ArgumentError, match="must be the function you wrote"):
        exercises.check("02.sdpa", 3)
    with pytest.raises(ArgumentError, match="chapter 99 has no exercises"):
        exercises.list_exercises(99)


def test_hint_and_solution_show_what_they_should(capsys):
    assert "sqrt(d_k)" in exercises.hint("02.sdpa")
    fn = exercises.solution("11.kd_loss")
    out = capsys.readouterr().out
    assert fn is EXERCISES[[e.id for e in EXERCISES].index("11.kd_loss")].reference
    assert "def distillation_loss" in out and "temperature**2" in out


# --------------------------------------------------------------------------------- headless and progress
def test_headless_runs_use_the_reference_and_learners_their_own(monkeypatch):
    mine = _attention_no_scale
    monkeypatch.setenv(exercises.MODE_ENV, "reference")
    assert exercises.headless()
    assert exercises.solution_for_headless("02.sdpa", mine) is exercises.exercise("02.sdpa").reference
    with pytest.raises(AssertionError, match="not divided"):  # a headless run fails on a failing check
        exercises.check("02.sdpa", mine, echo=False)
    monkeypatch.setenv(exercises.MODE_ENV, "mine")
    assert not exercises.headless()
    assert exercises.solution_for_headless("02.sdpa", mine) is mine
    monkeypatch.delenv(exercises.MODE_ENV)
    for sign in ("LMCOURSE_VERDICT_LOG", "PYTEST_CURRENT_TEST", "TQDM_DISABLE", "LMCOURSE_RUN_DIR"):
        monkeypatch.delenv(sign, raising=False)
    assert not exercises.headless()  # a JupyterLab kernel
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("LMCOURSE_RUN_DIR", "/tmp/run")
    assert exercises.headless()  # a kernel lmcourse's papermill runner started
    monkeypatch.setenv(exercises.MODE_ENV, "sometimes")
    with pytest.raises(ArgumentError, match="'reference' or 'mine'"):
        exercises.headless()


def test_a_learners_pass_is_recorded_and_listed(capsys):
    path = exercises.progress_path()
    assert not path.exists()
    exercises.check("02.sdpa", exercises.exercise("02.sdpa").reference, echo=False)
    assert not path.exists()  # the reference itself is not the learner's pass
    exercises.check("13.acc_bwt", lambda R: ref.acc_bwt(R), echo=False)
    exercises.check("02.sdpa", _attention_no_scale, echo=False)
    assert set(json.loads(path.read_text())["passed"]) == {"13.acc_bwt"}
    rows = exercises.list_exercises()
    out = capsys.readouterr().out
    assert {r["id"] for r in rows if r["passed"]} == {"13.acc_bwt"}
    assert "✓ 13.acc_bwt" in out and f"1 of {len(EXERCISES)} passed" in out
    assert not list(path.parent.glob(".*.tmp"))  # written atomically, no temporary left behind


def test_command_line_lists_and_shows(capsys):
    from lmcourse.cli import main

    assert main(["exercises", "--chapter", "11"]) == 0
    out = capsys.readouterr().out
    assert "11.kd_loss" in out and "11.int8_per_channel" in out and "02.sdpa" not in out
    assert main(["exercises", "02.sdpa", "--hint"]) == 0
    out = capsys.readouterr().out
    assert "True where a query MAY attend" in out and "hint for 02.sdpa" in out
    assert main(["exercises", "nope"]) == 2
    assert "unknown exercise 'nope'" in capsys.readouterr().err


# ------------------------------------------------------------------- a learner's session in a real kernel
def test_a_learner_types_a_wrong_answer_then_the_right_one_in_a_kernel(tmp_path):
    """The exercise cell of chapter 02 as the notebooks have it (lmcourse.exercises.cells), run in a Jupyter kernel
    of a learner's session (none of the headless signs in its environment): the placeholder says "not written
    yet", a wrong answer typed into the cell fails with the case and the hint, the right one passes and is
    recorded."""
    import os
    import queue

    from jupyter_client.manager import start_new_kernel

    from lmcourse.exercises.cells import answer_name, code_cell_source

    ex = exercises.exercise("02.sdpa")
    cell, name = code_cell_source(ex), answer_name(ex)
    placeholder = f"{name} = exercises.unanswered('02.sdpa')"
    assert placeholder in cell and "exercises.solution_for_headless('02.sdpa'" in cell
    wrong = cell.replace(placeholder, "\n".join([
        f"def {name}(q, k, v, mask=None):",
        "    scores = q @ k.transpose(-2, -1)",
        "    if mask is not None:",
        "        scores = scores.masked_fill(~mask, float('-inf'))",
        "    return scores.softmax(-1) @ v"]))
    right = wrong.replace("q @ k.transpose(-2, -1)", "q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5")
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTEST_CURRENT_TEST", "LMCOURSE_VERDICT_LOG", "TQDM_DISABLE", exercises.MODE_ENV}}
    env[exercises.PROGRESS_ENV] = str(tmp_path / "progress.json")
    km, kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(tmp_path))
    try:
        def run(code: str) -> str:
            msg_id = kc.execute(code)
            out = []
            while True:
                try:
                    msg = kc.get_iopub_msg(timeout=120)
                except queue.Empty:
                    break
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                if msg["msg_type"] == "stream":
                    out.append(msg["content"]["text"])
                elif msg["msg_type"] == "error":
                    out.append("ERROR " + msg["content"]["ename"])
                elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    break
            return "".join(out)

        assert "not written yet" in run(cell)
        failed = run(wrong)
        assert "✗ 02.sdpa" in failed and "scores are not divided by √d_k" in failed and "ERROR" not in failed
        assert "✓ 02.sdpa" in run(right)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert "02.sdpa" in json.loads((tmp_path / "progress.json").read_text())["passed"]


def test_every_chapter_has_further_reading_with_sources():
    from lmcourse.exercises.cells import READING, reading_markdown

    assert sorted(READING) == list(range(1, 15))
    for chapter, (papers, docs) in READING.items():
        assert len(papers) >= 3 and docs, chapter
        for paper in papers:  # authors (year). title. venue or arXiv id
            assert re.search(r"\((19|20)\d\d\)", paper), paper
        text = reading_markdown(chapter)
        assert text.startswith("## Further reading") and all(d in text for d in docs)
        assert all(re.search(r"\]\(https://", d) for d in docs), docs


# every chapter 01-14 ends with its exercise cells, one per registered exercise, each checking through
# solution_for_headless, and a Further reading cell
CHAPTERS = sorted(p for p in (Path(__file__).resolve().parent.parent / "notebooks").glob("[01][0-9]_*.ipynb")
                  if 1 <= int(p.name[:2]) <= 14)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_ends_with_its_exercises_and_further_reading(path):
    chapter = int(path.name[:2])
    cells = nbformat.read(path, as_version=4).cells
    sources = [c.source for c in cells if c.cell_type == "code"]
    for ex in exercises.exercises_of(chapter):
        cell = [s for s in sources if f"exercises.check({ex.id!r}" in s]
        assert len(cell) == 1, f"{path.name}: no (or more than one) exercise cell for {ex.id}"
        assert f"exercises.solution_for_headless({ex.id!r}" in cell[0]
    assert cells[-1].cell_type == "markdown" and cells[-1].source.startswith("## Further reading")
    assert "arXiv" in cells[-1].source or "20" in cells[-1].source
