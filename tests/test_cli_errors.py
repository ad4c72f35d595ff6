"""User mistakes end with exit code 2 and one line saying what to do, never a traceback."""

import sys

import pytest

from harness.cli import main


@pytest.mark.parametrize("argv, needle", [
    (["bench", "nosuchbench"], "no benchmark 'nosuchbench'"),
    (["bench", "aurl", "--profile", "huge"], "unknown profile 'huge'"),
    (["bench", "aurl", "--profile", "paper"], "runs on real data"),
    (["bench", "aurl", "--dataset", "nope"], "has no dataset 'nope'"),
    (["bench", "aurl", "--data", "/nonexistent/dir", "--dataset", "Books"], "does not exist"),
])
def test_user_errors(workdir, capsys, argv, needle):
    assert main(argv + ["--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0]


def test_unknown_method_in_yaml(workdir, capsys):
    (workdir / "b.yaml").write_text(
        "methods: {x: {method: nosuchmethod}}\n"
        "datasets: {d: {dataset: amazon, params: {synthetic: {n_users: 100, n_items: 80}}}}\n"
        "monitor: {metric: val/recall_20, mode: max}\ntable: [recall_20]\nseeds: 1\n")
    assert main(["bench", str(workdir / "b.yaml"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'nosuchmethod'" in err and "aurl" in err


def test_file_store_uri_is_refused(workdir, capsys):
    assert main(["bench", "aurl", "--profile", "quick", "--tracking-uri", "file:./mlruns"]) == 2
    assert "file store" in capsys.readouterr().err


def test_unreachable_tracking_server_is_one_line(workdir, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    argv = ["bench", "aurl", "--profile", "quick", "--no-progress",
            "--tracking-uri", "http://127.0.0.1:9"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach MLflow tracking" in err[0]


@pytest.mark.parametrize("bench", ["tsformer", "eddycnn"])
@pytest.mark.parametrize("content", ["empty", "garbage"])
def test_bad_ocean_data_directory_is_one_line(workdir, capsys, bench, content):
    """A bad DATA directory for the ocean benchmarks used to end in a traceback
    (OceanDataError was not a UserError and left through prepare_data outside run_one's try)."""
    data = workdir / "ocean"
    data.mkdir()
    if content == "garbage":
        (data / "thetao_2020.nc").write_bytes(b"not a netCDF file at all" * 10)
    argv = ["bench", bench, "--profile", "quick", "--no-progress", "--data", str(data)]
    assert main(argv) == 2
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if "mlflow.store.db" not in ln]
    assert len(err) == 1 and err[0].startswith("error:") and str(data) in err[0], err


def test_sqlalchemy_shutdown_noise_is_dropped_and_nothing_else(monkeypatch):
    """SQLAlchemy's weakref callback hashing a dead ref (``TypeError: weak object has gone
    away``) used to print "Exception ignored in ..." after an interrupted command's last line;
    the console script's hook drops that one and passes every other unraisable on."""
    import gc
    import weakref

    from sqlalchemy.event import registry

    from harness import entry

    class Obj:
        pass

    def die(callback) -> None:
        o = Obj()
        ref = weakref.ref(o, callback)  # noqa: F841 (alive until o dies, then the callback runs)
        del o
        gc.collect()

    def other(ref) -> None:
        raise TypeError("weak object has gone away")

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.object))  # restored after
    monkeypatch.setitem(registry._collection_to_key, object(), {})  # non-empty: `in` hashes
    monkeypatch.setattr(sys, "argv", ["harness", "list"])
    with pytest.raises(SystemExit):
        entry.main()  # wraps the hook
    die(registry._collection_gced)
    assert seen == []
    die(other)
    assert seen == [other]
