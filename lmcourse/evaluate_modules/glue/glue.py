"""GLUE metric as a local ``evaluate`` module, so it loads offline with ``evaluate.load(<this folder>)``.

Same config names and result keys as the Hub's ``glue`` metric; values are fractions. Tasks scored by
two numbers also get ``combined_score``, their mean (what GLUE averages into its overall score).
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef

_DESCRIPTION = """GLUE (Wang et al., 2019) task metrics: Matthews correlation for CoLA, Pearson and
Spearman correlation for STS-B, accuracy and F1 of the positive class for MRPC and QQP, accuracy for
the other tasks."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted labels (int) or, for stsb, predicted scores (float).
    references: gold labels (int) or, for stsb, gold scores (float).
Returns: cola: matthews_correlation; stsb: pearson, spearmanr, combined_score; mrpc, qqp: accuracy,
    f1, combined_score; sst2, mnli, mnli_matched, mnli_mismatched, qnli, rte, wnli, hans: accuracy.
"""

_CITATION = """@inproceedings{wang2019glue, title={GLUE: A Multi-Task Benchmark and Analysis Platform
for Natural Language Understanding}, author={Wang, Alex and Singh, Amanpreet and Michael, Julian and
Hill, Felix and Levy, Omer and Bowman, Samuel R.}, booktitle={ICLR}, year={2019}}"""

ACCURACY_ONLY = ("sst2", "mnli", "mnli_mismatched", "mnli_matched", "qnli", "rte", "wnli", "hans")
CONFIGS = ("cola", "stsb", "mrpc", "qqp", *ACCURACY_ONLY)


def _with_combined(result: dict[str, float]) -> dict[str, float]:
    if len(result) > 1:
        result["combined_score"] = float(np.mean(list(result.values())))
    return result


def glue_scores(config: str, predictions, references) -> dict[str, float]:
    """The metric values of one GLUE config (also usable without ``evaluate``)."""
    if config not in CONFIGS:
        raise KeyError(f"unknown GLUE metric config {config!r}; choose one of {list(CONFIGS)}")
    preds, refs = np.asarray(predictions), np.asarray(references)
    if preds.shape != refs.shape:
        raise ValueError(f"glue/{config}: {preds.shape[0] if preds.ndim else 1} predictions but "
                         f"{refs.shape[0] if refs.ndim else 1} references; pass one prediction per reference")
    if preds.size == 0:
        raise ValueError(f"glue/{config}: no predictions given")
    if config == "cola":
        return {"matthews_correlation": float(matthews_corrcoef(refs, preds))}
    if config == "stsb":
        return _with_combined({
            "pearson": float(pearsonr(preds.astype(np.float64), refs.astype(np.float64))[0]),
            "spearmanr": float(spearmanr(preds, refs)[0]),
        })
    accuracy = float((preds == refs).mean())
    if config in ("mrpc", "qqp"):
        return _with_combined({"accuracy": accuracy, "f1": float(f1_score(refs, preds, pos_label=1))})
    return {"accuracy": accuracy}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Glue(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        if self.config_name not in CONFIGS:
            raise KeyError(
                f"unknown GLUE metric config {self.config_name!r}; choose one of {list(CONFIGS)}"
            )
        dtype = "float32" if self.config_name == "stsb" else "int64"
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}),
            codebase_urls=[],
            reference_urls=["https://gluebenchmark.com/"],
            format="numpy",
        )

    def _compute(self, predictions, references):
        return glue_scores(self.config_name, predictions, references)
