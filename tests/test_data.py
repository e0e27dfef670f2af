"""lmcourse.data on the real offline mirror: row counts and schema of nyu-mll/glue, and every error path."""

from __future__ import annotations

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Value

from lmcourse.data import CORPORA, GLUE_TASKS, availability, find_glue_split, get_task, load_corpus, load_glue
from lmcourse.errors import DataUnavailableError, UnknownNameError

# nyu-mll/glue dataset card (https://huggingface.co/datasets/nyu-mll/glue): rows per split, label names.
NYU_GLUE_ROWS = {
    "cola": {"train": 8551, "validation": 1043, "test": 1063},
    "sst2": {"train": 67349, "validation": 872, "test": 1821},
    "mrpc": {"train": 3668, "validation": 408, "test": 1725},
    "stsb": {"train": 5749, "validation": 1500, "test": 1379},
    "rte": {"train": 2490, "validation": 277, "test": 3000},
    "wnli": {"train": 635, "validation": 71, "test": 146},
    "qnli": {"validation": 5463, "test": 5463},
    "ax": {"test": 1104},
}
NYU_GLUE_LABELS = {
    "cola": ["unacceptable", "acceptable"],
    "sst2": ["negative", "positive"],
    "mrpc": ["not_equivalent", "equivalent"],
    "qqp": ["not_duplicate", "duplicate"],
    "mnli": ["entailment", "neutral", "contradiction"],
    "qnli": ["entailment", "not_entailment"],
    "rte": ["entailment", "not_entailment"],
    "wnli": ["not_entailment", "entailment"],
    "ax": ["entailment", "neutral", "contradiction"],
}
NYU_GLUE_INPUTS = {
    "cola": ["sentence"], "sst2": ["sentence"], "mrpc": ["sentence1", "sentence2"],
    "qqp": ["question1", "question2"], "stsb": ["sentence1", "sentence2"], "mnli": ["premise", "hypothesis"],
    "qnli": ["question", "sentence"], "rte": ["sentence1", "sentence2"], "wnli": ["sentence1", "sentence2"],
    "ax": ["premise", "hypothesis"],
}
MIRRORED = [(task, split) for task, splits in NYU_GLUE_ROWS.items() for split in splits]


def test_registry_covers_all_glue_configs():
    assert set(GLUE_TASKS) == set(NYU_GLUE_INPUTS)
    for name, spec in GLUE_TASKS.items():
        assert list(spec.input_columns) == NYU_GLUE_INPUTS[name]
        assert spec.is_pair == (len(NYU_GLUE_INPUTS[name]) == 2)
        if name == "stsb":
            assert spec.is_regression and spec.num_labels == 1 and spec.label_names == ()
        else:
            assert not spec.is_regression
            assert list(spec.label_names) == NYU_GLUE_LABELS[name]
            assert spec.num_labels == len(NYU_GLUE_LABELS[name])
    assert GLUE_TASKS["mnli"].eval_splits == ("validation_matched", "validation_mismatched")
    assert GLUE_TASKS["ax"].metric_config == "mnli"
    assert {t.main_metric for t in GLUE_TASKS.values()} == {"matthews_correlation", "pearson", "f1", "accuracy"}


@pytest.mark.parametrize(("task", "split"), MIRRORED)
def test_mirrored_split_has_hub_rows_and_schema(data_dir, task, split):
    ds = load_glue(task, split)
    assert isinstance(ds, Dataset)
    assert ds.num_rows == NYU_GLUE_ROWS[task][split]
    assert list(ds.column_names) == [*NYU_GLUE_INPUTS[task], "label", "idx"]
    label = ds.features["label"]
    if task == "stsb":
        assert label == Value("float32")
    else:
        assert isinstance(label, ClassLabel) and label.names == NYU_GLUE_LABELS[task]
    assert ds.features["idx"] == Value("int32")
    labels = set(ds.unique("label"))
    if split == "test":
        assert labels == {-1} or (task == "stsb" and all(v == -1 for v in labels))
    elif task != "stsb":
        assert labels == set(range(len(NYU_GLUE_LABELS[task])))
    else:
        assert min(labels) >= 0.0 and max(labels) <= 5.0
    assert all(isinstance(t, str) and t for t in ds[:20][NYU_GLUE_INPUTS[task][0]])


def test_all_splits_as_datasetdict_and_slices(data_dir):
    dd = load_glue("mrpc")
    assert isinstance(dd, DatasetDict)
    assert {k: v.num_rows for k, v in dd.items()} == NYU_GLUE_ROWS["mrpc"]
    assert load_glue("sst2", "train[:100]").num_rows == 100
    two = load_glue("rte", ["train[:10]", "validation"])
    assert two["train[:10]"].num_rows == 10 and two["validation"].num_rows == 277
    assert get_task("SST-2").name == "sst2"


def test_source_argument_reads_that_folder(data_dir):
    ds = load_glue("wnli", "validation", source=data_dir / "glue")
    assert ds.num_rows == 71
    found, tried = find_glue_split("wnli", "validation", source=data_dir / "glue")
    assert found is not None and found.kind == "local" and tried == []


def test_unknown_task_lists_known_ones():
    with pytest.raises(UnknownNameError) as err:
        load_glue("sst3")
    assert "sst3" in str(err.value) and "cola" in str(err.value) and "wnli" in str(err.value)


def test_unknown_and_malformed_split():
    with pytest.raises(UnknownNameError, match=r"no split 'dev'.*train, validation, test"):
        load_glue("cola", "dev")
    with pytest.raises(UnknownNameError, match="malformed split"):
        load_glue("cola", "train[:10")
    with pytest.raises(UnknownNameError, match="empty split list"):
        load_glue("cola", [])


def test_split_the_mirror_lacks_names_task_split_sources_and_remedy(data_dir):
    with pytest.raises(DataUnavailableError) as err:
        load_glue("qnli", "train")
    msg = str(err.value)
    assert "qnli/train" in msg
    assert str(data_dir / "glue") in msg  # the mirror was tried
    assert "data/glue" in msg  # the repo cache was tried
    assert "nyu-mll/glue" in msg and "offline" in msg  # the Hub was considered and why it was skipped
    assert "To get it" in msg
    assert "Traceback" not in msg


def test_offline_with_no_local_copy(tmp_path, monkeypatch):
    monkeypatch.delenv("LMCOURSE_DATA_DIR", raising=False)
    monkeypatch.setattr("lmcourse.data.REPO_ROOT", tmp_path)
    with pytest.raises(DataUnavailableError, match=r"GLUE sst2/validation is not available"):
        load_glue("sst2", "validation")
    with pytest.raises(DataUnavailableError, match="source argument"):
        load_glue("sst2", "validation", source=tmp_path / "empty")


def test_corrupt_local_file_gives_one_clear_error(tmp_path):
    (tmp_path / "cola").mkdir()
    (tmp_path / "cola" / "validation-00000-of-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataUnavailableError) as err:
        load_glue("cola", "validation", source=tmp_path)
    assert "cola/validation" in str(err.value) and "failed" in str(err.value)


def test_corpora_from_the_mirror(data_dir):
    shakespeare = load_corpus("tiny-shakespeare", "train")
    text = (data_dir / "corpora" / "tiny-shakespeare" / "input.txt").read_text(encoding="utf-8")
    assert shakespeare.column_names == ["text"]
    assert shakespeare.num_rows == len(text.splitlines())
    assert shakespeare[0]["text"] == text.splitlines()[0]
    wiki = load_corpus("wikitext-2")
    assert set(wiki) == {"validation", "test"}
    assert wiki["validation"].num_rows == len((data_dir / "corpora" / "wikitext-2" / "valid.txt")
                                              .read_text(encoding="utf-8").splitlines())
    assert load_corpus("wikitext-2", "test[:50]").num_rows == 50


def test_corpus_errors(data_dir):
    with pytest.raises(UnknownNameError, match=r"known corpora: .*tiny-shakespeare"):
        load_corpus("war-and-peace")
    with pytest.raises(DataUnavailableError) as err:
        load_corpus("wikitext-2", "train")
    assert "'train'" in str(err.value) and "wikitext-2" in str(err.value) and "offline" in str(err.value)
    with pytest.raises(DataUnavailableError, match="Salesforce/wikitext"):
        load_corpus("wikitext-103-raw")
    assert "tinystories" in CORPORA


def test_availability_table(data_dir):
    rows = availability()
    by_key = {(r["dataset"], r["name"], r["split"]): r for r in rows}
    assert by_key[("glue", "sst2", "train")]["source"] != "unavailable"
    assert by_key[("glue", "qnli", "train")]["source"] == "unavailable"
    assert by_key[("glue", "qnli", "validation")]["source"] != "unavailable"
    assert by_key[("glue", "mnli", "validation_matched")]["source"] == "unavailable"
    glue_rows = [r for r in rows if r["dataset"] == "glue"]
    assert len(glue_rows) == sum(len(t.splits) for t in GLUE_TASKS.values())
