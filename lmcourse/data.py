"""GLUE and text corpora, from an offline mirror when there is one and from the Hub otherwise.

Source resolution, first hit wins, per split:

1. an explicit ``source`` folder;
2. ``$LMCOURSE_DATA_DIR/glue`` (``.../corpora`` for corpora) — CI and offline machines;
3. ``data/glue`` (``data/corpora``) inside the repository, a git-ignored cache;
4. the Hugging Face Hub (``nyu-mll/glue``), unless ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` is set.

A local folder has the Hub layout: ``<root>/<config>/<split>-00000-of-00001.parquet`` for GLUE and
``<root>/<corpus>/<file>.txt`` for corpora. Whatever the source, the result has the exact schema of
``nyu-mll/glue`` (features are fixed by :data:`GLUE_TASKS`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from lmcourse.errors import DataUnavailableError, UnknownNameError
from lmcourse.paths import REPO_ROOT

DATA_DIR_ENV = "LMCOURSE_DATA_DIR"
GLUE_HUB_ID = "nyu-mll/glue"


@dataclass(frozen=True)
class GlueTask:
    """What the course needs to know about one GLUE config."""

    name: str
    input_columns: tuple[str, ...]
    label_names: tuple[str, ...]  # empty for the regression task
    is_regression: bool
    metric_config: str
    eval_splits: tuple[str, ...]
    splits: tuple[str, ...]
    num_rows: dict[str, int] = field(default_factory=dict)  # nyu-mll/glue row counts, per split
    description: str = ""

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names)

    @property
    def is_pair(self) -> bool:
        return len(self.input_columns) == 2

    @property
    def train_split(self) -> str | None:
        return "train" if "train" in self.splits else None

    @property
    def main_metric(self) -> str:
        """The metric GLUE ranks this task by (the first of its result keys)."""
        return {"cola": "matthews_correlation", "stsb": "pearson", "mrpc": "f1", "qqp": "f1"}.get(
            self.name, "accuracy"
        )

    def features(self):
        """The ``datasets.Features`` of nyu-mll/glue for this config."""
        from datasets import ClassLabel, Features, Value

        cols = {c: Value("string") for c in self.input_columns}
        label = Value("float32") if self.is_regression else ClassLabel(names=list(self.label_names))
        return Features({**cols, "label": label, "idx": Value("int32")})


_NLI2 = ("entailment", "not_entailment")
GLUE_TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in [
        GlueTask("cola", ("sentence",), ("unacceptable", "acceptable"), False, "cola", ("validation",),
                 ("train", "validation", "test"), {"train": 8551, "validation": 1043, "test": 1063},
                 "grammatical acceptability (Matthews correlation)"),
        GlueTask("sst2", ("sentence",), ("negative", "positive"), False, "sst2", ("validation",),
                 ("train", "validation", "test"), {"train": 67349, "validation": 872, "test": 1821},
                 "movie-review sentiment"),
        GlueTask("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), False, "mrpc",
                 ("validation",), ("train", "validation", "test"),
                 {"train": 3668, "validation": 408, "test": 1725}, "paraphrase (F1 / accuracy)"),
        GlueTask("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), False, "qqp",
                 ("validation",), ("train", "validation", "test"),
                 {"train": 363846, "validation": 40430, "test": 390965}, "duplicate questions (F1 / accuracy)"),
        GlueTask("stsb", ("sentence1", "sentence2"), (), True, "stsb", ("validation",),
                 ("train", "validation", "test"), {"train": 5749, "validation": 1500, "test": 1379},
                 "semantic similarity, 0-5 (Pearson / Spearman)"),
        GlueTask("mnli", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"), False, "mnli",
                 ("validation_matched", "validation_mismatched"),
                 ("train", "validation_matched", "validation_mismatched", "test_matched", "test_mismatched"),
                 {"train": 392702, "validation_matched": 9815, "validation_mismatched": 9832,
                  "test_matched": 9796, "test_mismatched": 9847}, "natural language inference, 3 classes"),
        GlueTask("qnli", ("question", "sentence"), _NLI2, False, "qnli", ("validation",),
                 ("train", "validation", "test"), {"train": 104743, "validation": 5463, "test": 5463},
                 "question answering as entailment"),
        GlueTask("rte", ("sentence1", "sentence2"), _NLI2, False, "rte", ("validation",),
                 ("train", "validation", "test"), {"train": 2490, "validation": 277, "test": 3000},
                 "recognising textual entailment"),
        GlueTask("wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment"), False, "wnli",
                 ("validation",), ("train", "validation", "test"), {"train": 635, "validation": 71, "test": 146},
                 "Winograd NLI (adversarial; majority class wins)"),
        GlueTask("ax", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"), False, "mnli",
                 (), ("test",), {"test": 1104}, "diagnostic set, evaluated with an MNLI model"),
    ]
}


def get_task(task: str) -> GlueTask:
    """The registry entry for ``task``, or an error listing the known tasks."""
    key = str(task).strip().lower().replace("-", "")
    key = {"sst": "sst2", "stsb": "stsb", "stsbenchmark": "stsb"}.get(key, key)
    if key not in GLUE_TASKS:
        raise UnknownNameError(f"unknown GLUE task {task!r}; known tasks: {', '.join(GLUE_TASKS)}")
    return GLUE_TASKS[key]


# --------------------------------------------------------------------------------------------- sources
def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"}
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _local_roots(kind: str, source: str | os.PathLike | None) -> list[tuple[str, Path]]:
    """Local folders to look in for ``kind`` ('glue' or 'corpora'), labelled for messages."""
    roots: list[tuple[str, Path]] = []
    if source is not None:
        roots.append(("source argument", Path(source).expanduser()))
        return roots
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        roots.append((f"${DATA_DIR_ENV}/{kind}", Path(env).expanduser() / kind))
    roots.append((f"repo cache data/{kind}", REPO_ROOT / "data" / kind))
    return roots


_SLICE = re.compile(r"^(?P<base>[A-Za-z_]+)(?P<slice>\[.*\])?$")


def _split_base(split: str) -> tuple[str, str]:
    m = _SLICE.match(split.strip())
    if not m:
        raise UnknownNameError(f"malformed split {split!r}; use a split name such as 'train' or 'train[:100]'")
    return m.group("base"), m.group("slice") or ""


def _glue_files(root: Path, task: str, split: str) -> list[str]:
    folder = root / task
    return sorted(str(p) for p in folder.glob(f"{split}-*.parquet")) if folder.is_dir() else []


@dataclass(frozen=True)
class SplitSource:
    """Where one split comes from: a local folder (with its files) or the Hub."""

    kind: str  # "local" or "hub"
    label: str
    location: str
    files: tuple[str, ...] = ()


def find_glue_split(
    task: str, split: str, source: str | os.PathLike | None = None
) -> tuple[SplitSource | None, list[str]]:
    """The first source that has ``task``/``split``, and the list of places tried (for messages)."""
    spec = get_task(task)
    tried: list[str] = []
    for label, root in _local_roots("glue", source):
        files = _glue_files(root, spec.name, split)
        if files:
            return SplitSource("local", label, str(root), tuple(files)), tried
        tried.append(f"{label} ({root / spec.name}/{split}-*.parquet): not found")
    if source is None:
        if _offline():
            tried.append(f"Hugging Face Hub {GLUE_HUB_ID}: skipped, offline (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE set)")
        else:
            return SplitSource("hub", "Hugging Face Hub (online)", GLUE_HUB_ID), tried
    return None, tried


def _how_to_get_glue(task: str) -> str:
    return (
        f"To get it: go online and let lmcourse fetch {GLUE_HUB_ID} from the Hub, or place the parquet files "
        f"of the Hub dataset ({GLUE_HUB_ID}, folder {task}/) under $LMCOURSE_DATA_DIR/glue/{task}/ or "
        f"data/glue/{task}/ in the repository, or pass source=<folder>. `lmcourse data` lists what is available."
    )


def load_glue(task: str, split: str | list[str] | None = None, source: str | os.PathLike | None = None):
    """A GLUE config as a ``Dataset`` (one split) or ``DatasetDict`` (several, default: all).

    ``split`` may carry a slice, ``"train[:200]"``. Raises :class:`DataUnavailableError` naming the
    task, split, every source tried and how to get the data when a split can't be had.
    """
    spec = get_task(task)
    wanted = list(spec.splits) if split is None else [split] if isinstance(split, str) else list(split)
    if not wanted:
        raise UnknownNameError(f"load_glue({spec.name!r}): empty split list; splits are {list(spec.splits)}")
    loaded = {}
    for name in wanted:
        base, sl = _split_base(name)
        if base not in spec.splits:
            raise UnknownNameError(
                f"GLUE task {spec.name!r} has no split {base!r}; its splits are {', '.join(spec.splits)}"
            )
        found, tried = find_glue_split(spec.name, base, source)
        if found is None:
            raise DataUnavailableError(
                f"GLUE {spec.name}/{base} is not available. Sources tried:\n  - " + "\n  - ".join(tried)
                + "\n" + _how_to_get_glue(spec.name)
            )
        loaded[name] = _load_glue_split(spec, base, sl, found)
    if isinstance(split, str):
        return loaded[split]
    from datasets import DatasetDict

    return DatasetDict(loaded)


def _load_glue_split(spec: GlueTask, base: str, sl: str, found: SplitSource):
    from datasets import load_dataset

    try:
        if found.kind == "local":
            ds = load_dataset("parquet", data_files={base: list(found.files)}, split=base + sl,
                              features=spec.features())
        else:
            ds = load_dataset(GLUE_HUB_ID, spec.name, split=base + sl)
    except Exception as exc:  # one clear message instead of a deep datasets stack trace
        raise DataUnavailableError(
            f"GLUE {spec.name}/{base}: loading from {found.label} ({found.location}) failed: "
            f"{type(exc).__name__}: {exc}\n" + _how_to_get_glue(spec.name)
        ) from None
    return ds.cast(spec.features()) if ds.features != spec.features() else ds


# --------------------------------------------------------------------------------------------- corpora
@dataclass(frozen=True)
class Corpus:
    """A text corpus: local files per split (mirror layout) and its Hub id."""

    name: str
    local_files: dict[str, str]  # split -> file name inside <root>/<name>/
    hub_id: str
    hub_config: str | None
    description: str


CORPORA: dict[str, Corpus] = {
    c.name: c
    for c in [
        Corpus("wikitext-2", {"train": "train.txt", "validation": "valid.txt", "test": "test.txt"},
               "Salesforce/wikitext", "wikitext-2-v1", "WikiText-2 (tokenized, <unk> for rare words)"),
        Corpus("wikitext-2-raw", {"train": "train.txt", "validation": "valid.txt", "test": "test.txt"},
               "Salesforce/wikitext", "wikitext-2-raw-v1", "WikiText-2 raw"),
        Corpus("wikitext-103-raw", {}, "Salesforce/wikitext", "wikitext-103-raw-v1", "WikiText-103 raw (500 MB)"),
        Corpus("tiny-shakespeare", {"train": "input.txt"}, "karpathy/tiny_shakespeare", None,
               "Tiny Shakespeare, 1.1 MB of plays (char-rnn)"),
        Corpus("tinystories", {}, "roneneldan/TinyStories", None, "TinyStories: short synthetic children's stories"),
    ]
}


def load_corpus(name: str, split: str | None = None, source: str | os.PathLike | None = None):
    """A text corpus as ``Dataset``/``DatasetDict`` with one ``text`` column, one line a row."""
    key = str(name).strip().lower()
    if key not in CORPORA:
        raise UnknownNameError(f"unknown corpus {name!r}; known corpora: {', '.join(CORPORA)}")
    corpus = CORPORA[key]
    from datasets import DatasetDict, load_dataset

    tried: list[str] = []
    for label, root in _local_roots("corpora", source):
        folder = root / corpus.name
        available = {s: folder / f for s, f in corpus.local_files.items() if (folder / f).is_file()}
        if not available:
            tried.append(f"{label} ({folder}): not found")
            continue
        if split is not None:
            base, sl = _split_base(split)
            if base not in available:
                tried.append(f"{label} ({folder}): has {sorted(available)}, not {base!r}")
                continue
            return load_dataset("text", data_files={base: str(available[base])}, split=base + sl)
        return DatasetDict(
            {s: load_dataset("text", data_files={s: str(p)}, split=s) for s, p in available.items()}
        )
    if source is None and not _offline():
        try:
            args = (corpus.hub_id, corpus.hub_config) if corpus.hub_config else (corpus.hub_id,)
            return load_dataset(*args, split=split)
        except Exception as exc:
            tried.append(f"Hugging Face Hub {corpus.hub_id}: {type(exc).__name__}: {str(exc)[:200]}")
    elif source is None:
        tried.append(f"Hugging Face Hub {corpus.hub_id}: skipped, offline (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE set)")
    where = f"split {split!r} of " if split else ""
    raise DataUnavailableError(
        f"{where}corpus {corpus.name!r} is not available. Sources tried:\n  - " + "\n  - ".join(tried)
        + f"\nTo get it: go online (Hub id {corpus.hub_id}), or place its text files "
        f"({', '.join(corpus.local_files.values()) or 'from the Hub'}) under $LMCOURSE_DATA_DIR/corpora/{corpus.name}/."
    )


# --------------------------------------------------------------------------------------------- overview
def availability() -> list[dict[str, str]]:
    """One row per GLUE task/split and corpus/split: which source would serve it (for `lmcourse data`)."""
    rows = []
    for spec in GLUE_TASKS.values():
        for split in spec.splits:
            found, _ = find_glue_split(spec.name, split)
            rows.append({
                "dataset": "glue", "name": spec.name, "split": split,
                "rows": str(spec.num_rows.get(split, "")),
                "source": "unavailable" if found is None else found.label,
                "location": "" if found is None else found.location,
            })
    for corpus in CORPORA.values():
        splits = corpus.local_files or {"train": ""}
        for split in splits:
            hit = None
            for label, root in _local_roots("corpora", None):
                f = root / corpus.name / corpus.local_files.get(split, "\0")
                if corpus.local_files and f.is_file():
                    hit = (label, str(root))
                    break
            if hit is None and not _offline():
                hit = ("Hugging Face Hub (online)", corpus.hub_id)
            rows.append({"dataset": "corpus", "name": corpus.name, "split": split, "rows": "",
                         "source": hit[0] if hit else "unavailable", "location": hit[1] if hit else ""})
    return rows
