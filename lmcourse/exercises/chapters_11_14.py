"""The exercises of chapters 11-14: compression, interpretability, continual learning, does pretraining help.

See :mod:`lmcourse.exercises.catalog`."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from lmcourse import attention
from lmcourse.compression import distillation, quantization
from lmcourse.exercises import references as ref
from lmcourse.exercises.core import Case, Exercise, Mistake, difference, generator
from lmcourse.exercises.custom import open_exercise
from lmcourse.exercises.registry import _add, _randn
from lmcourse.interpretability import attention_rollout, integration_points
from lmcourse.readout import mean_pool


# =========================================================================================== 11 compression
def _kd_cases() -> list[Case]:
    g = generator(1101)
    labels = torch.randint(0, 3, (8,), generator=g)
    partial = labels.clone()
    partial[::3] = -100
    return [Case("B=8, 3 classes, T=2, alpha=0.5", (_randn(g, 8, 3), _randn(g, 8, 3, scale=2.0), labels),
                 {"temperature": 2.0, "alpha": 0.5}),
            Case("T=4, alpha=0.9", (_randn(g, 8, 3), _randn(g, 8, 3, scale=2.0), labels), {"temperature": 4.0,
                                                                                          "alpha": 0.9}),
            Case("batch of one, 5 classes, T=3", (_randn(g, 1, 5), _randn(g, 1, 5, scale=2.0), torch.tensor([2])),
                 {"temperature": 3.0, "alpha": 0.5}),
            Case("unlabelled examples (label -100) use only the soft loss",
                 (_randn(g, 8, 3), _randn(g, 8, 3, scale=2.0), partial), {"temperature": 2.0, "alpha": 0.5}),
            Case("T=1 (the soft loss is a plain KL)", (_randn(g, 4, 6), _randn(g, 4, 6), torch.randint(0, 6, (4,),
                                                                                                        generator=g)),
                 {"temperature": 1.0, "alpha": 0.3})]


def _kd(power=2, direction="teacher", reduction="mean", soften_teacher=True):
    def fn(student_logits, teacher_logits, labels, temperature=2.0, alpha=0.5):
        T = temperature
        ls = torch.log_softmax(student_logits / T, -1)
        lt = torch.log_softmax(teacher_logits / (T if soften_teacher else 1.0), -1)
        kl = (lt.exp() * (lt - ls)).sum(-1) if direction == "teacher" else (ls.exp() * (ls - lt)).sum(-1)
        soft = (kl.mean() if reduction == "mean" else kl.sum()) * T**power
        known = labels != -100
        hard = F.cross_entropy(student_logits[known], labels[known])
        return alpha * soft + (1 - alpha) * hard
    return fn


_add(Exercise(
    id="11.kd_loss", chapter=11, title="The distillation loss with its T² factor",
    statement=("Write `kd_loss(student_logits, teacher_logits, labels, temperature=2.0, alpha=0.5)`: "
               "alpha · T² · KL(p_T(teacher) ‖ p_T(student)) + (1 − alpha) · CE(student, labels), p_T = "
               "softmax(logits / T), both terms batch means; labels equal to -100 drop out of the cross-entropy."),
    reference=distillation.distillation_loss,
    hint="soft = (p_t * (log p_t - log p_s)).sum(-1).mean() * T**2 with both softmaxes at T; hard = cross_entropy on "
         "labels != -100",
    cases=_kd_cases,
    mistakes=[Mistake("T instead of T²", _kd(power=1),
                      "multiply the soft term by T², not T: the soft gradients shrink as 1/T², and T² gives them "
                      "back their size (Hinton et al. 2015)"),
              Mistake("no T² factor", _kd(power=0),
                      "multiply the soft term by T²: without it the soft loss fades as T grows"),
              Mistake("KL in the wrong direction", _kd(direction="student"),
                      "the KL is KL(teacher ‖ student) = Σ p_t (log p_t − log p_s): the teacher's probabilities "
                      "weigh the sum"),
              Mistake("the sum instead of the mean over the batch", _kd(reduction="sum"),
                      "take the batch MEAN of the per-example KL (F.kl_div's reduction='batchmean'), not the sum"),
              Mistake("the teacher is not softened", _kd(soften_teacher=False),
                      "divide the TEACHER's logits by T too: its soft targets carry the dark knowledge")],
    shows=[distillation.distillation_loss]))


def _quant_cases() -> list[Case]:
    g = generator(1102)
    outlier = _randn(g, 3, 6)
    outlier[1, 2] = 40.0
    zero_row = _randn(g, 4, 5)
    zero_row[2] = 0.0
    return [Case("(4, 7), 8 bits", (_randn(g, 4, 7),)), Case("an outlier in one row", (outlier,)),
            Case("an all-zero row", (zero_row,)), Case("4 bits", (_randn(g, 5, 8),), {"bits": 4}),
            Case("(1, 1)", (torch.tensor([[-0.3]]),))]


def _quant_compare(expected, got) -> str | None:
    if not isinstance(got, tuple | list) or len(got) != 2:
        return f"expected a tuple (codes, scales), got {type(got).__name__}"
    codes, scales = got
    if not isinstance(codes, torch.Tensor) or codes.is_floating_point():
        return f"codes must be an integer tensor (int8 for 8 bits), got {getattr(codes, 'dtype', type(codes).__name__)}"
    return difference(expected[1], scales, atol=1e-7, rtol=1e-5, where="scales") or \
        difference(expected[0], codes, atol=0, rtol=0, where="codes")


def _quant(per_tensor=False, qmax_fn=lambda b: 2 ** (b - 1) - 1, rounding=torch.round, zero_guard=True):
    def fn(weight, bits=8):
        qmax = qmax_fn(bits)
        w = weight.float()
        scales = w.abs().amax() / qmax * torch.ones(w.shape[0]) if per_tensor else w.abs().amax(1) / qmax
        if zero_guard:
            scales = torch.where(scales > 0, scales, torch.ones_like(scales))
        codes = torch.clamp(rounding(w * (1.0 / scales)[:, None]), -qmax, qmax)
        return codes.to(torch.int8 if bits <= 8 else torch.int16), scales
    return fn


_add(Exercise(
    id="11.int8_per_channel", chapter=11, title="Symmetric per-channel int8 quantization",
    statement=("Write `quantize_per_channel(weight, bits=8)`: one scale per output row, s_i = max_j |W_ij| / "
               "(2^(bits−1) − 1), codes q_ij = round(W_ij / s_i) clamped to ±(2^(bits−1) − 1); an all-zero row "
               "gets scale 1. Return (codes as an integer tensor, int8 for <= 8 bits; scales (rows,))."),
    reference=quantization.quantize_per_channel,
    hint="scales = W.abs().amax(dim=1) / qmax (1 where 0); codes = round(W * (1/scales)[:, None]).clamp(-qmax, qmax)",
    cases=_quant_cases, compare=_quant_compare,
    mistakes=[Mistake("one scale for the whole tensor", _quant(per_tensor=True),
                      "a per-tensor scale where per-channel is asked: each output row gets its own scale "
                      "(amax over dim=1), so one outlier does not crush every row's resolution"),
              Mistake("qmax = 2^(bits−1)", _quant(qmax_fn=lambda b: 2 ** (b - 1)),
                      "symmetric quantization uses ±(2^(bits−1) − 1) = ±127 for 8 bits; 128 does not fit in int8"),
              Mistake("truncation instead of rounding", _quant(rounding=torch.trunc),
                      "round to the nearest code (torch.round); truncation doubles the worst-case error"),
              Mistake("an all-zero row divides by zero", _quant(zero_guard=False),
                      "an all-zero row has max |W| = 0: give it scale 1 (torch.where(scales > 0, scales, 1))")],
    shows=[quantization.quantize_per_channel]))


# =========================================================================================== 12 interpretability
def _ig_cases() -> list[Case]:
    g = generator(1201)
    w = _randn(g, 6, 3)

    def f_tanh(z, w=w):
        return torch.tanh(z @ w).sum(-1)

    def f_quad(z):
        return (z**2).sum(-1) + z[..., 0] * z[..., -1]

    emb = _randn(g, 5, 4)

    def f_seq(z, emb=emb):  # a (T, d) input, a tiny "sentence": score = softplus of the pooled projection
        return F.softplus((z * emb).sum((-1, -2)))

    return [Case("tanh score, d=6, 20 steps", (f_tanh, _randn(g, 6), torch.zeros(6), 20)),
            Case("quadratic, random baseline, 7 steps", (f_quad, _randn(g, 5), _randn(g, 5), 7)),
            Case("one step", (f_tanh, _randn(g, 6), torch.zeros(6), 1)),
            Case("a (T, d) input, 16 steps", (f_seq, _randn(g, 5, 4), torch.zeros(5, 4), 16))]


def _ig(alpha_fn=lambda steps: (torch.arange(steps) + 0.5) / steps, scale=True, reduce="mean"):
    def fn(f, x, baseline, steps):
        a = alpha_fn(steps).to(x.dtype).reshape(-1, *([1] * x.dim()))
        path = (baseline + a * (x - baseline)).detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(f(path).sum(), path)
        avg = grad.mean(0) if reduce == "mean" else grad.sum(0)
        return ((x - baseline) * avg if scale else avg).detach()
    return fn


_add(Exercise(
    id="12.ig_riemann", chapter=12, title="Integrated gradients by a Riemann sum",
    statement=("Write `integrated_gradients(f, x, baseline, steps)`: f maps a batch of inputs (n, *x.shape) to one "
               "score each (n,). Return IG = (x − x') · (1/m) Σ_k ∇f(x' + α_k (x − x')) with the midpoint rule "
               "α_k = (k + ½)/m, k = 0..m−1 (m = steps), of x's shape. Evaluate the m path points as one batch."),
    reference=ref.ig_riemann,
    hint="alphas = (arange(m) + 0.5) / m; path = x' + alphas[:, None] * (x - x'); grad of f(path).sum() w.r.t. path; "
         "(x - x') * grad.mean(0)",
    cases=_ig_cases, atol=1e-5,
    mistakes=[Mistake("not multiplied by (x − x')", _ig(scale=False),
                      "multiply the averaged gradient by (x − x'): that factor makes the attributions add up to "
                      "f(x) − f(x') (completeness)"),
              Mistake("the sum instead of the mean over steps", _ig(reduce="sum"),
                      "the Riemann sum weighs each step by 1/m: average the gradients, do not add them"),
              Mistake("left endpoints instead of midpoints", _ig(alpha_fn=lambda s: torch.arange(s) / s),
                      "use the midpoints α_k = (k + ½)/m (integration_points(m, 'riemann_middle')), not k/m")],
    shows=[ref.ig_riemann, integration_points]))


def _rollout_cases() -> list[Case]:
    g = generator(1202)

    def attn(*shape):
        return torch.softmax(_randn(g, *shape, scale=2.0), -1)

    return [Case("3 layers, B=2, 4 heads, T=5", ([attn(2, 4, 5, 5) for _ in range(3)],)),
            Case("one layer", ([attn(1, 2, 4, 4)],)),
            Case("batch of one, one head, T=7, 2 layers", ([attn(1, 1, 7, 7) for _ in range(2)],)),
            Case("6 layers, T=3", ([attn(2, 3, 3, 3) for _ in range(6)],))]


def _rollout(residual=True, order="last_left", heads="mean"):
    def fn(attns):
        a = torch.stack(list(attns))
        a = a.mean(2) if heads == "mean" else a.amax(2)
        if residual:
            a = 0.5 * a + 0.5 * torch.eye(a.shape[-1])
            a = a / a.sum(-1, keepdim=True)
        out = a[0]
        for layer in a[1:]:
            out = layer @ out if order == "last_left" else out @ layer
        return out
    return fn


_add(Exercise(
    id="12.attention_rollout", chapter=12, title="Attention rollout",
    statement=("Write `attention_rollout(attns)`: attns is a list of per-layer attention weights (B, H, T, T). "
               "Average the heads, add the residual as A' = ½A + ½I, renormalise the rows, and multiply the layers "
               "with the LAST on the left, R = A'_L ⋯ A'_1 (Abnar & Zuidema 2020). Return R (B, T, T)."),
    reference=attention_rollout,
    hint=("a = stack(attns).mean(2); a = 0.5*a + 0.5*I; a /= a.sum(-1, keepdim=True); r = a[0]; "
          "for l in a[1:]: r = l @ r"),
    cases=_rollout_cases,
    mistakes=[Mistake("the residual connection is left out", _rollout(residual=False),
                      "add the residual: A' = ½A + ½I (the skip connection carries half of each token's own signal)"),
              Mistake("the layers multiplied in the wrong order", _rollout(order="first_left"),
                      "the last layer goes on the LEFT: R = A'_L ⋯ A'_1 (r = layer @ r)"),
              Mistake("heads combined by the maximum", _rollout(heads="max"),
                      "average the heads (mean over dim 1 of each layer), not the maximum")],
    shows=[attention_rollout]))


# =========================================================================================== 13 continual
def _R_cases() -> list[Case]:
    rng = np.random.default_rng(1301)
    return [Case("3 tasks", (rng.uniform(0.4, 0.95, size=(3, 3)),)), Case("2 tasks", ([[0.9, 0.5], [0.7, 0.85]],)),
            Case("5 tasks", (rng.uniform(0.4, 0.95, size=(5, 5)),)),
            Case("no forgetting", (np.array([[0.8, 0.5, 0.5], [0.8, 0.7, 0.5], [0.8, 0.7, 0.9]]),))]


def _bwt_flipped(R):
    R = np.asarray(R, float)
    T = len(R)
    return float(R[-1].mean()), float(np.mean([R[i, i] - R[-1, i] for i in range(T - 1)]))


def _acc_diagonal(R):
    R = np.asarray(R, float)
    return float(np.diag(R).mean()), ref.acc_bwt(R)[1]


def _bwt_over_T(R):
    R = np.asarray(R, float)
    T = len(R)
    return float(R[-1].mean()), float(np.sum([R[-1, i] - R[i, i] for i in range(T)]) / T)


_add(Exercise(
    id="13.acc_bwt", chapter=13, title="ACC and BWT from an accuracy matrix",
    statement=("Write `acc_bwt(R)`: R[i, j] is the accuracy on task j after training on tasks 0..i (T × T). "
               "Return (ACC, BWT): ACC = mean_j R[T−1, j]; BWT = 1/(T−1) Σ_{i<T−1} (R[T−1, i] − R[i, i]) "
               "(Lopez-Paz & Ranzato 2017; negative means forgetting)."),
    reference=ref.acc_bwt,
    hint="ACC = R[-1].mean(); BWT = mean over i < T-1 of R[-1, i] - R[i, i]",
    cases=_R_cases, rtol=1e-9,
    mistakes=[Mistake("BWT with the sign flipped", _bwt_flipped,
                      "BWT = final minus just-learned, R[T−1, i] − R[i, i]: forgetting makes it negative"),
              Mistake("ACC from the diagonal", _acc_diagonal,
                      "ACC is read at the END, in the last row R[T−1, :], not on the diagonal (each task just "
                      "after learning it)"),
              Mistake("BWT averaged over all T tasks", _bwt_over_T,
                      "the last task has no 'later' to forget in: average over the first T − 1 tasks")],
    shows=[__import__("lmcourse.continual", fromlist=["transfer_metrics"]).transfer_metrics]))


def _ewc_cases() -> list[Case]:
    g = generator(1302)

    def dicts(*shapes):
        names = [f"w{i}" for i in range(len(shapes))]
        return ({n: _randn(g, *s) for n, s in zip(names, shapes)},
                {n: _randn(g, *s).abs() for n, s in zip(names, shapes)},
                {n: _randn(g, *s) for n, s in zip(names, shapes)})

    return [Case("two parameters, lambda=10", (*dicts((3, 4), (4,)), 10.0)), Case("one scalar-like parameter",
                                                                            (*dicts((1,)), 0.5)),
            Case("three parameters, lambda=1000", (*dicts((2, 2), (5,), (1, 3)), 1000.0))]


def _ewc(half=True, square=True, use_fisher=True):
    def fn(params, fisher, anchor, lam):
        total = sum(((fisher[n] if use_fisher else 1.0) * ((params[n] - anchor[n]) ** 2 if square
                                                            else (params[n] - anchor[n]).abs())).sum() for n in fisher)
        return (0.5 if half else 1.0) * lam * total
    return fn


_add(Exercise(
    id="13.ewc_penalty", chapter=13, title="EWC's quadratic penalty",
    statement=("Write `ewc_penalty(params, fisher, anchor, lam)`: dicts name -> tensor of the current weights θ, the "
               "diagonal Fisher F and the weights θ* after the earlier task. Return λ/2 · Σ_k F_k (θ_k − θ*_k)² "
               "(Kirkpatrick et al. 2017, eq. 3) as a scalar tensor."),
    reference=ref.ewc_penalty,
    hint="0.5 * lam * sum((F[n] * (params[n] - anchor[n]) ** 2).sum() for n in fisher)",
    cases=_ewc_cases, rtol=1e-5,
    mistakes=[Mistake("the 1/2 is missing", _ewc(half=False), "EWC's penalty is λ/2 · Σ F (θ − θ*)²: keep the ½"),
              Mistake("absolute instead of squared distance", _ewc(square=False),
                      "square the distance (θ − θ*)²: the penalty is the quadratic (Laplace) approximation"),
              Mistake("the Fisher weights are left out", _ewc(use_fisher=False),
                      "weigh each squared distance by its Fisher value: important weights are held harder")],
    shows=[ref.ewc_penalty]))


# =========================================================================================== 14 pretraining helps?
def _live_cases() -> list[Case]:
    return [Case("5 seeds well above chance", ([0.81, 0.79, 0.83, 0.80, 0.82], 0.5)),
            Case("2 seeds just above chance", ([0.60, 0.62], 0.5)),
            Case("a single run", ([0.9], 0.5)),
            Case("3 seeds around chance", ([0.49, 0.52, 0.51], 0.5)),
            Case("one weak seed among good ones", ([0.45, 0.70, 0.72, 0.71, 0.69], 0.5)),
            Case("10 seeds slightly above", ([0.53, 0.54, 0.52, 0.55, 0.53, 0.54, 0.52, 0.53, 0.55, 0.54], 0.5))]


def _live_mean(values, chance):
    return bool(np.mean(values) > chance)


def _live_z(values, chance):
    v = np.asarray(values, float)
    if len(v) < 2:
        return bool(v.mean() > chance)
    return bool(v.mean() - 1.959964 * v.std(ddof=1) / math.sqrt(len(v)) > chance)


def _live_min(values, chance):
    return bool(min(values) > chance)


_add(Exercise(
    id="14.is_live", chapter=14, title="Did the arm learn? The liveness rule",
    statement=("Write `is_live(values, chance)`: values are one arm's scores over seeds, chance the constant "
               "predictor's score (the majority class). Return True when the arm's own 95 % Student-t interval of "
               "the mean lies entirely above chance; a single run has no interval and is not live."),
    reference=ref.is_live,
    hint="n >= 2 and mean - t_{0.975, n-1} * s / sqrt(n) > chance",
    cases=_live_cases,
    mistakes=[Mistake("the mean alone beats chance", _live_mean,
                      "a mean above chance can be seed noise: the arm's whole 95 % t interval must clear chance "
                      "(and one run has no interval)"),
              Mistake("1.96 instead of the t quantile", _live_z,
                      "use Student's t quantile with n − 1 degrees of freedom (12.7 for 2 seeds), not 1.96; one run "
                      "is never live"),
              Mistake("every seed above chance", _live_min,
                      "the rule is about the interval of the MEAN, not every single seed: mean − t·s/√n > chance")],
    shows=[ref.is_live]))


def _pool_cases() -> list[Case]:
    g = generator(1401)
    return [Case("padded batch (lengths 5, 2, 4)", (_randn(g, 3, 5, 6), attention.lengths_to_mask([5, 2, 4]).long())),
            Case("batch of one, no padding", (_randn(g, 1, 4, 3), torch.ones(1, 4, dtype=torch.long))),
            Case("a row of padding alone gives zeros", (_randn(g, 2, 3, 2), torch.tensor([[1, 1, 0], [0, 0, 0]]))),
            Case("one token", (_randn(g, 2, 1, 5), torch.ones(2, 1, dtype=torch.long)))]


def _pool_padding_in(hidden, attention_mask):
    return hidden.mean(1)


def _pool_sum(hidden, attention_mask):
    return (hidden * attention_mask[..., None].to(hidden.dtype)).sum(1)


def _pool_over_T(hidden, attention_mask):
    return (hidden * attention_mask[..., None].to(hidden.dtype)).sum(1) / hidden.shape[1]


_add(Exercise(
    id="14.mean_pool", chapter=14, title="Mean pooling over the real tokens",
    statement=("Write `mean_pool(hidden, attention_mask)`: hidden (B, T, d), attention_mask (B, T) with 1 for real "
               "tokens and 0 for padding. Return (B, d), the mean of each row's real tokens; a row of padding "
               "alone gives the zero vector (clamp the count at 1)."),
    reference=mean_pool,
    hint="m = mask[..., None].float(); (hidden * m).sum(1) / m.sum(1).clamp(min=1)",
    cases=_pool_cases,
    mistakes=[Mistake("padding included in the mean", _pool_padding_in,
                      "leave the padding out: multiply by the mask and divide by the number of REAL tokens"),
              Mistake("the sum instead of the mean", _pool_sum,
                      "divide by the number of real tokens: the sum grows with the sentence's length"),
              Mistake("divided by T", _pool_over_T,
                      "divide by each row's number of real tokens (mask.sum(1)), not by the padded length T")],
    shows=[mean_pool]))

_add(open_exercise(
    id="14.open_more_labels", chapter=14, title="Predict: does the gap from pretraining shrink with more labels?",
    statement=("Open exercise. Run the chapter's pretrained-vs-random-init comparison at a larger training size (for "
               "example four times the chapter's), predict first whether pretraining's gain shrinks, then compare "
               "the two gains with lmcourse.spread.compare(a=gain at the larger size, b=gain at the chapter's, "
               "paired=True) and record a dict: prediction ('a better', 'b better' or 'no difference'), why, "
               "comparison."),
    prediction_hint="Pretraining helps most where labels are few (Howard & Ruder 2018; Gururangan et al. 2020)"))
