"""The zoo: every model behind docs/RESULTS.md is in the checkout's zoo/, unchanged, and loads;
`zoo:NAME` resolves from a local copy, the cache or a download, checked, from any install."""

import functools
import hashlib
import http.server
import io
import json
import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from sgt_tfmot import _cli, load_model, zoo
from sgt_tfmot._checks import InputError
from sgt_tfmot.zoo.download import ProgressBar

CHECKOUT_ZOO = Path(__file__).resolve().parents[1] / "zoo"
ENTRIES = zoo.entries()


@pytest.fixture
def checkout_zoo(monkeypatch):
    monkeypatch.setenv(zoo.ZOO_ENV, str(CHECKOUT_ZOO))


def test_the_manifest_has_the_facts_and_the_files_of_each_model():
    assert ENTRIES, "sgt_tfmot/zoo/manifest.json lists no model"
    for name, entry in ENTRIES.items():
        for key in ("command", "commit", "dataset", "bits", "test_accuracy", "files"):
            assert entry.get(key) not in (None, ""), (name, key)
        assert {"model.h5", "metrics.json"} <= set(entry["files"]), name
        for record in entry["files"].values():
            assert len(record["sha256"]) == 64 and record["size_bytes"] > 0, name
            assert record["size_bytes"] < 3 * 1024 * 1024, name  # no file over 3 MiB


def test_the_checkouts_zoo_folder_is_the_manifest_exactly():
    folders = {p.name for p in CHECKOUT_ZOO.iterdir() if p.is_dir()}
    assert folders == set(ENTRIES)
    for name, entry in ENTRIES.items():
        assert {p.name for p in (CHECKOUT_ZOO / name).iterdir()} == set(entry["files"]), name
        assert zoo.problems(CHECKOUT_ZOO / name, entry["files"]) == {}, name
    assert not (CHECKOUT_ZOO / "manifest.json").exists()  # one manifest: the package's


@pytest.mark.slow  # 17 models, 2-25 s each
@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_each_entry_loads_from_the_checkout(name, checkout_zoo):
    model = load_model(f"zoo:{name}")
    folder = zoo.resolve(f"zoo:{name}")
    assert folder == CHECKOUT_ZOO / name
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["test_accuracy"] == ENTRIES[name]["test_accuracy"]
    shape = tuple(model.inputs[0].shape[1:])
    scores = model(np.zeros((1, *shape), np.float32), training=False)  # eager: no tracing
    assert scores.shape == (1, metrics["data"]["num_classes"] if "data" in metrics else 10)


def test_a_checkout_finds_its_own_zoo_without_settings(monkeypatch, tmp_path):
    monkeypatch.delenv(zoo.ZOO_ENV, raising=False)
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(zoo.URL_ENV, "http://127.0.0.1:9")  # nothing is downloaded
    assert zoo.checkout_zoo() == CHECKOUT_ZOO
    name = sorted(zoo.entries())[0]
    assert zoo.resolve(f"zoo:{name}") == CHECKOUT_ZOO / name
    monkeypatch.setenv(zoo.ZOO_ENV, str(tmp_path))  # the variable still comes first
    with pytest.raises(zoo.ZooError, match=f"tried {tmp_path / name} "):
        zoo.resolve(f"zoo:{name}")


def test_an_unknown_zoo_name_lists_the_zoo():
    count = len(zoo.entries())
    with pytest.raises(InputError, match=rf"No zoo model 'nope'. The zoo has {count}: cifar10-"):
        load_model("zoo:nope")
    # A near miss is named first; a long zoo is cut to one line, the rest counted.
    models = {f"cifar10-grid-w4a4-row{i:02d}-1ep": {} for i in range(40)}
    message = zoo.unknown_name("cifar10-grid-w4a4-row07-2ep", models)
    assert message.startswith("No zoo model 'cifar10-grid-w4a4-row07-2ep'. Did you mean "
                              "'cifar10-grid-w4a4-row07-1ep'")  # fmt: skip
    assert message.endswith("more (sgt_tfmot.zoo.entries()).") and len(message) < 800
    assert "\n" not in message and message.count("cifar10-grid") < 40
    assert zoo.unknown_name("x", {}) == "No zoo model 'x'. The zoo has 0: none."


def test_the_cache_is_the_platforms(monkeypatch, tmp_path):
    monkeypatch.delenv(zoo.CACHE_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(zoo.sys, "platform", "linux")
    assert zoo.cache_root() == Path.home() / ".cache" / "sgt_tfmot"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert zoo.cache_root() == tmp_path / "sgt_tfmot"
    monkeypatch.setattr(zoo.sys, "platform", "darwin")
    assert zoo.cache_root() == Path.home() / "Library" / "Caches" / "sgt_tfmot"
    monkeypatch.setattr(zoo.sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path))
    assert zoo.cache_root() == tmp_path / "sgt_tfmot" / "Cache"
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "mine"))
    assert zoo.cache_root() == tmp_path / "mine"


# ------------------------------------------------------------- a tiny zoo served on 127.0.0.1
FILES = {"model.h5": np.random.default_rng(0).bytes(200_000), "metrics.json": b'{"x": 1}\n'}


def _record(content: bytes) -> dict:
    return {"sha256": hashlib.sha256(content).hexdigest(), "size_bytes": len(content)}


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; paths in `truncate` get their full Content-Length and half the body."""

    truncate: set = set()
    requests: list = []

    def do_GET(self):  # noqa: N802 (the base class's name)
        self.requests.append(self.path)
        if self.path in self.truncate:
            body = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """(base URL, served folder, handler class) of a server on 127.0.0.1 holding tiny/."""
    served = tmp_path / "served"
    (served / "tiny").mkdir(parents=True)
    for file, content in FILES.items():
        (served / "tiny" / file).write_bytes(content)
    handler = type("Handler", (_Handler,), {"truncate": set(), "requests": []})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(served))
    )
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", served, handler
    httpd.shutdown()
    httpd.server_close()


def tiny_zoo(base_url, cache, local=None, **changes) -> zoo.Zoo:
    records = {file: _record(content) for file, content in FILES.items()}
    models = {"tiny": {"files": records}, "absent": {"files": records}}
    models["tiny"]["files"].update(changes)
    return zoo.Zoo(models=models, local_dir=local, cache_dir=cache, base_url=base_url)


def cached_names(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.rglob("*") if p.is_file())


def test_a_download_fills_the_cache_with_checked_files_then_the_cache_serves(server, tmp_path):
    url, _, handler = server
    cache = tmp_path / "cache"
    folder = tiny_zoo(url, cache).resolve("tiny")
    assert folder == cache / "tiny"
    assert {f: (folder / f).read_bytes() for f in FILES} == FILES
    assert sorted(handler.requests) == ["/tiny/metrics.json", "/tiny/model.h5"]
    assert tiny_zoo("http://127.0.0.1:9/", cache).resolve("tiny") == folder  # no network now
    (folder / "model.h5").write_bytes(b"changed")  # a damaged cache file is fetched again
    tiny_zoo(url, cache).resolve("tiny")
    assert (folder / "model.h5").read_bytes() == FILES["model.h5"]
    assert handler.requests[-1] == "/tiny/model.h5" and len(handler.requests) == 3


def test_a_local_copy_comes_first_and_must_match_the_manifest(server, tmp_path):
    url, served, handler = server
    assert tiny_zoo(url, tmp_path / "cache", local=served).resolve("tiny") == served / "tiny"
    assert handler.requests == []
    (served / "tiny" / "metrics.json").write_bytes(b'{"x": 2}\n')
    with pytest.raises(zoo.ZooError, match=r"metrics.json does not match the package's manifest"):
        tiny_zoo(url, tmp_path / "cache", local=served).resolve("tiny")
    (served / "tiny" / "metrics.json").unlink()  # incomplete: the cache and download follow
    with pytest.raises(zoo.ZooError, match=r"tried .*tiny \(no metrics.json\), the cache .*404"):
        tiny_zoo(url, tmp_path / "cache", local=served).resolve("tiny")


@pytest.mark.parametrize(
    "case, expected",
    [
        ("truncated", r"tiny/model.h5: the transfer ended after 100,000 of 200,000 bytes"),
        ("wrong hash", r"tiny/model.h5: sha256 [0-9a-f]{64}, the manifest says 0{64}"),
        ("missing", r"absent/model.h5: HTTP 404"),
        ("offline", r"127.0.0.1:9/tiny/model.h5: .*refused"),
    ],
)
def test_a_failed_download_is_one_line_and_leaves_nothing_in_the_cache(
    server, tmp_path, case, expected
):
    url, _, handler = server
    cache = tmp_path / "cache"
    name, changes = "tiny", {}
    if case == "truncated":
        handler.truncate.add("/tiny/model.h5")
    elif case == "wrong hash":
        changes = {"model.h5": {"sha256": "0" * 64, "size_bytes": len(FILES["model.h5"])}}
    elif case == "missing":
        name = "absent"
    elif case == "offline":
        url = "http://127.0.0.1:9"  # the discard port: nothing listens
    with pytest.raises(zoo.ZooError) as caught:
        tiny_zoo(url, cache, **changes).resolve(name)
    message = str(caught.value)
    assert "\n" not in message
    assert (
        f"zoo:{name} not found; tried no local zoo ($SGT_TFMOT_ZOO or --zoo_dir; not run from "
        "a checkout)" in message
    )
    assert f"the cache {cache / name}" in message
    assert message.endswith(
        "Point $SGT_TFMOT_ZOO or --zoo_dir at a copy of the zoo (a checkout's zoo/ folder), "
        "or $SGT_TFMOT_ZOO_URL at a mirror of it."
    )
    assert re.search(expected, message), message
    assert [p.name for p in cache.rglob("*") if p.is_file()] == []  # nothing half written


def test_a_cache_that_cannot_be_written_is_one_line(server, tmp_path):
    url, _, _ = server
    (tmp_path / "cache").write_text("a file where the cache should be")
    with pytest.raises(zoo.ZooError) as caught:
        tiny_zoo(url, tmp_path / "cache").resolve("tiny")
    assert str(caught.value) == (
        f"zoo:tiny: cannot write the cache {tmp_path / 'cache' / 'tiny'} (Not a directory); set "
        "$SGT_TFMOT_CACHE to a writable directory, or $SGT_TFMOT_ZOO to a copy of the zoo."
    )


def test_a_killed_downloads_leftover_is_removed_and_a_live_one_kept(server, tmp_path):
    url, _, _ = server
    folder = tmp_path / "cache" / "tiny"
    folder.mkdir(parents=True)
    stale, live = folder / ".model.h5.old.partial", folder / ".model.h5.new.partial"
    stale.write_bytes(b"half")
    live.write_bytes(b"half")
    os.utime(stale, (0, 0))
    tiny_zoo(url, tmp_path / "cache").resolve("tiny")
    assert not stale.exists() and live.exists()


def test_the_progress_bar_draws_in_place_on_a_terminal_and_one_line_elsewhere():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    log = io.StringIO()
    bar = ProgressBar("zoo:tiny/model.h5", 2_000_000, log)
    bar.update(1_000_000)
    bar.close()
    ProgressBar("zoo:tiny/metrics.json", 2_363, log)
    ProgressBar("zoo:tiny/labels.txt", 20, log)
    assert log.getvalue().splitlines() == [
        "downloading zoo:tiny/model.h5 (2.0 MB)",
        "downloading zoo:tiny/metrics.json (2.4 kB)",
        "downloading zoo:tiny/labels.txt (20 bytes)",
    ]
    screen = Terminal()
    bar = ProgressBar("f", 2_000_000, screen)
    for done in (500_000, 500_001, 2_000_000):
        bar.update(done)
    bar.close()
    assert screen.getvalue() == (
        "\rf [######..................]  25%  0.5/2.0 MB"
        "\rf [########################] 100%  2.0/2.0 MB\n"
    )


# --------------------------------------------------------------------------- through the CLIs
def test_the_cli_says_in_one_line_what_was_tried_when_offline(monkeypatch, tmp_path, capsys):
    from sgt_tfmot import convert

    monkeypatch.delenv(zoo.ZOO_ENV, raising=False)
    monkeypatch.setattr(zoo, "checkout_zoo", lambda: None)  # as from an installed wheel
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(zoo.URL_ENV, "http://127.0.0.1:9")
    status = convert.main(
        ["convert", "--int8", "zoo:mnist-w8a8-sgt-1ep", "--output", str(tmp_path / "m.tflite")]
    )
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == _cli.EXIT_BAD_INPUT
    assert len(lines) == 1 and lines[0].startswith(
        "sgt_tfmot.convert: error: zoo:mnist-w8a8-sgt-1ep not found; tried no local zoo"
    ), lines
    assert cached_names(tmp_path / "cache") == [] and not (tmp_path / "m.tflite").exists()


def test_zoo_dir_must_be_a_directory_and_is_the_env_variable_while_the_tool_runs(
    monkeypatch, tmp_path, capsys
):
    from sgt_tfmot import convert

    monkeypatch.delenv(zoo.ZOO_ENV, raising=False)
    argv = ["convert", "--int8", "zoo:nope", "--output", str(tmp_path / "m.tflite")]
    assert convert.main([*argv, "--zoo_dir", str(tmp_path / "none")]) == _cli.EXIT_BAD_INPUT
    assert capsys.readouterr().err == (
        f"sgt_tfmot.convert: error: --zoo_dir {tmp_path / 'none'}: no such directory "
        "(a copy of the zoo/ folder).\n"
    )
    seen = []
    monkeypatch.setattr(convert, "_convert", lambda _: seen.append(os.environ.get(zoo.ZOO_ENV)))
    assert convert.main([*argv, "--zoo_dir", str(tmp_path)]) is None
    assert seen == [str(tmp_path)] and zoo.ZOO_ENV not in os.environ
