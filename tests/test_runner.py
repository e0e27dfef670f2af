

def test_default_runs_dir_is_the_checkouts_runs_from_any_folder_inside(monkeypatch, tmp_path):
    from lmcourse.data import REPO_ROOT
    from lmcourse.paths import RUNS_DIR_ENV, default_runs_dir

    monkeypatch.delenv(RUNS_DIR_ENV, raising=False)
    monkeypatch.chdir(REPO_ROOT / "notebooks")  # where Jupyter runs a notebook
    assert default_runs_dir() == REPO_ROOT.resolve() / "runs"
    monkeypatch.chdir(tmp_path)  # outside the checkout
    assert default_runs_dir() == tmp_path.resolve() / "runs"
    monkeypatch.setenv(RUNS_DIR_ENV, str(tmp_path / "elsewhere"))
    assert default_runs_dir() == tmp_path / "elsewhere"
