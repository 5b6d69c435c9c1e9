"""Probes of an attacker and a careless user: output safety, resource limits, bad files, bad numbers (issue 11)."""

import io
import json
import multiprocessing
import os
import random
import shutil
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from ciidefence import ImageError, load_image
from ciidefence.errors import CheckpointError, ConfigError
from ciidefence.evaluation.lock import RunLock
from conftest import BUNDLED_SAMPLE
from test_cli import assert_one_line_error, ciid
from test_evaluation import data_dir, evaluate  # noqa: F401  (the fixture)

# --- output safety ------------------------------------------------------------------------------


@pytest.fixture()
def inputs(tmp_path, sample_paths):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(sample_paths[0], folder / sample_paths[0].name)
    return folder


def test_purify_never_follows_a_planted_symlink(inputs, tmp_path, sample_paths):
    out, victim = tmp_path / "out", tmp_path / "victim.txt"
    out.mkdir()
    victim.write_text("precious")
    stem = sample_paths[0].stem
    os.symlink(victim, out / f".{stem}.partial.png")  # where the first release wrote its temporary file
    result = ciid("purify", inputs, "--out", out, "--defence", "median")
    assert result.returncode == 0, result.stderr
    assert victim.read_text() == "precious" and Image.open(out / f"{stem}.png").size

    (out / f"{stem}.png").unlink()
    os.symlink(victim, out / f"{stem}.png")  # a link at the output's own name
    result = ciid("purify", inputs, "--out", out, "--defence", "median", "--overwrite")
    assert_one_line_error(result, 1, "is a link")
    assert victim.read_text() == "precious"


def test_purify_keeps_originals_and_existing_outputs_unless_told(inputs, tmp_path, sample_paths):
    original = (inputs / sample_paths[0].name).read_bytes()
    assert_one_line_error(ciid("purify", inputs, "--out", inputs, "--defence", "median"), 2, "holds input images")
    assert_one_line_error(ciid("purify", inputs, "--out", inputs / "sub", "--defence", "median"), 2,
                          "holds input images")
    assert (inputs / sample_paths[0].name).read_bytes() == original and not (inputs / "sub").exists()

    out = tmp_path / "out"
    out.mkdir()
    existing = out / f"{sample_paths[0].stem}.png"
    existing.write_bytes(b"mine")
    assert_one_line_error(ciid("purify", inputs, "--out", out, "--defence", "median"), 1, "already exists")
    assert existing.read_bytes() == b"mine"
    assert ciid("purify", inputs, "--out", out, "--defence", "median", "--overwrite").returncode == 0
    assert Image.open(existing).size == Image.open(sample_paths[0]).size


def test_purify_finishes_a_killed_run_with_skip_existing_and_respects_the_umask(inputs, tmp_path, sample_paths):
    shutil.copy(sample_paths[1], inputs / sample_paths[1].name)
    out = tmp_path / "out"
    out.mkdir()
    finished = out / f"{sample_paths[0].stem}.png"
    finished.write_bytes(b"finished before the kill")
    result = ciid("purify", inputs, "--out", out, "--defence", "median", "--skip-existing")
    assert result.returncode == 0, result.stderr
    assert "kept 1 already there" in result.stderr and finished.read_bytes() == b"finished before the kill"
    written = out / f"{sample_paths[1].stem}.png"
    assert Image.open(written).size == Image.open(sample_paths[1]).size
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(written.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600
    assert_one_line_error(ciid("purify", inputs, "--out", out, "--overwrite", "--skip-existing"), 2, "contradict")


def test_an_unwritable_output_gives_one_line_naming_the_path(inputs, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = ciid("purify", inputs, "--out", blocker / "out", "--defence", "median")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert str(blocker) in result.stderr


# --- resource limits ------------------------------------------------------------------------------


@pytest.mark.parametrize("size,message", [
    ((30000, 8), "too elongated"),          # 806 bytes; its classifier view would be 245M pixels
    ((6_250_000, 8), "too elongated"),      # exactly the 50M pixel limit, refused for its view
    ((50_000_000, 1), "too small"),
])
def test_thin_images_are_refused_before_any_resize(tmp_path, size, message):
    path = tmp_path / "thin.png"
    Image.new("L", size).save(path, optimize=True)
    with pytest.raises(ImageError, match=message):
        load_image(path)


def test_boxes_that_would_erase_the_image_are_refused(sample_paths, data_dir, tmp_path):  # noqa: F811
    assert_one_line_error(ciid("classify", sample_paths[0], "--half-width", "100000"), 2, "limit 50%")
    result = subprocess.run([sys.executable, "-m", "ciidefence.cli.main", "sweep", "--data", str(data_dir), "--out",
                             str(tmp_path / "sweep"), "--limit", "1", "--grid", "half_width=4,80", "--rivals", "",
                             "--attacks", "fgsm"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert len(summary["invalid"]) == 1 and "limit 50%" in next(iter(summary["invalid"].values()))
    assert sum(p["defence"] == "ciid" for p in summary["points"]) == 1


# --- bad numbers and bad weights --------------------------------------------------------------------


@pytest.mark.parametrize("eps", ["1e400", "nan", "inf", "-1", "0"])
def test_budgets_are_parsed_and_range_checked(data_dir, tmp_path, eps):  # noqa: F811
    result = evaluate(data_dir, tmp_path / "run", "--limit", "1", "--eps", eps, check=False)
    assert_one_line_error(result, 2, "eps")
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_with_nan_weights_is_refused(tmp_path, classifier, sample_paths):
    from safetensors.torch import save_file

    state = {key.removeprefix("body.network."): value.clone() for key, value in classifier.state_dict().items()
             if key.startswith("body.network.")}
    state["_fc.weight"] = classifier.linear_head.weight.detach().clone()
    state["_fc.bias"] = classifier.linear_head.bias.detach().clone()
    state["_fc.weight"][0, 0] = float("nan")
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "nan.safetensors")
    from ciidefence import load_classifier

    with pytest.raises(CheckpointError, match="NaN or Inf"):
        load_classifier(checkpoint=tmp_path / "nan.safetensors")
    assert_one_line_error(ciid("classify", sample_paths[0], "--checkpoint", tmp_path / "nan.safetensors"), 2, "NaN")


# --- bad images never stop a run ------------------------------------------------------------------------


def test_evaluate_records_an_unreadable_image_and_goes_on(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(BUNDLED_SAMPLE, data)
    broken = sorted(data.glob("*.JPEG"))[1]
    broken.write_bytes(broken.read_bytes()[:400])  # truncated
    out = tmp_path / "run"
    result = evaluate(data, out, "--limit", "3", "--attacks", "fgsm", "--eps", "2/255", "--no-sanity",
                      "--defences", "none,jpeg")
    assert result.returncode == 0
    summary = json.loads((out / "summary.json").read_text())
    assert all(c["images"] == 2 and c["errors"] == 1 for c in summary["cells"])
    text = (out / "summary.md").read_text()
    assert "| clean | 1 | " in text and "| fgsm 2/255 graybox | 1 | " in text and "--retry-errors" in text


def _mutate(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        kind = rng.random()
        position = rng.randrange(len(data))
        if kind < 0.5:
            data[position] = rng.randrange(256)
        elif kind < 0.7:
            data[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif kind < 0.85:
            del data[position : position + rng.randint(1, 64)]
        else:
            data = data[: max(1, position)]
        if not data:
            data = bytearray(b"\0")
    return bytes(data)


def _fuzz_seeds() -> dict[str, bytes]:
    rgb = (np.random.default_rng(0).random((24, 32, 3)) * 255).astype(np.uint8)
    seeds = {}
    for suffix, options in ((".jpg", {"format": "JPEG"}), (".png", {"format": "PNG"}),
                            (".tif", {"format": "TIFF", "compression": "tiff_lzw"}),
                            (".webp", {"format": "WEBP"}), (".bmp", {"format": "BMP"})):
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, **options)
        seeds[suffix] = buffer.getvalue()
    return seeds


def _fuzz(tmp_path, cases: int) -> None:
    seeds = _fuzz_seeds()
    rng = random.Random(1234)
    outcomes = {"image": 0, "ImageError": 0}
    for case in range(cases):
        suffix = list(seeds)[case % len(seeds)]
        path = tmp_path / f"case{suffix}"
        path.write_bytes(_mutate(seeds[suffix], rng))
        try:
            image = load_image(path)
        except ImageError:
            outcomes["ImageError"] += 1
            continue
        assert image.dtype == torch.float32 and image.shape[0] == 3 and torch.isfinite(image).all()
        outcomes["image"] += 1
    assert outcomes["image"] > 0 and outcomes["ImageError"] > 0  # the fuzz reached both ends


def test_a_mutation_fuzz_of_the_loader_ends_in_images_or_image_errors(tmp_path):
    _fuzz(tmp_path, 300)


@pytest.mark.slow
def test_a_longer_mutation_fuzz_of_the_loader(tmp_path):
    _fuzz(tmp_path, 4000)


# --- one writer per run folder -------------------------------------------------------------------------


def test_a_run_folder_in_use_is_refused_and_a_stale_lock_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from ciidefence.evaluation.lock import "
                               "RunLock; RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)",
                               str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=f"in use by process {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / ".lock").exists()  # killed: it could not remove its lock
    lock = RunLock(tmp_path).acquire()  # the holder is gone: its lock is stale
    assert (tmp_path / ".lock").read_text().split()[1] == str(os.getpid())
    lock.release()
    assert not (tmp_path / ".lock").exists()


def _contend(run_dir, start, done, outcomes):
    start.wait()
    try:
        lock = RunLock(run_dir).acquire()
    except ConfigError:
        outcomes.put("refused")
        done.wait()
        return
    outcomes.put("held")
    done.wait()  # hold it until both have tried
    lock.release()


def test_two_processes_never_both_take_a_dead_process_lock(tmp_path):
    context = multiprocessing.get_context("fork")
    for trial in range(20):
        run_dir = tmp_path / str(trial)
        run_dir.mkdir()
        (run_dir / ".lock").write_text(f"{os.uname().nodename} 999999999\n")  # its holder is long gone
        start, done, outcomes = context.Barrier(2), context.Barrier(2), context.Queue()
        workers = [context.Process(target=_contend, args=(run_dir, start, done, outcomes)) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        assert sorted(outcomes.get(timeout=5) for _ in workers) == ["held", "refused"], f"trial {trial}"


@pytest.mark.parametrize("planted", ["fifo", "device", "link"])
def test_a_lock_that_is_not_a_regular_file_is_refused_not_read(tmp_path, planted):
    lock = tmp_path / ".lock"
    if planted == "fifo":
        os.mkfifo(lock)
    elif planted == "device":
        os.symlink("/dev/zero", lock)
    else:
        os.symlink(tmp_path / "elsewhere", lock)
    with pytest.raises(ConfigError, match="lock|regular file"):
        RunLock(tmp_path).acquire()
    assert not (tmp_path / "elsewhere").exists()


# --- run folders that are not what we wrote -------------------------------------------------------------


def test_a_garbage_empty_or_edited_database_gives_one_line(tmp_path):
    from ciidefence.evaluation.store import ResultStore

    garbage, empty, edited = (tmp_path / name for name in ("garbage", "empty", "edited"))
    for folder in (garbage, empty, edited):
        folder.mkdir()
    (garbage / "results.sqlite").write_bytes(bytes(range(256)) * 20)
    (empty / "results.sqlite").write_bytes(b"")
    with ResultStore(edited / "results.sqlite") as store:
        store.set_meta("config", '{"model": "efficientnet_lite0"')
    assert_one_line_error(ciid("report", garbage), 2, "not a ciidefence results database")
    result = ciid("report", empty)
    assert result.returncode == 0 and "No results in" in result.stdout and "Traceback" not in result.stderr
    assert_one_line_error(ciid("report", edited), 2, "its stored plan cannot be read")


def test_a_model_name_never_becomes_a_path():
    from ciidefence.evaluation.summary import file_safe

    assert file_safe("../../elsewhere/model") == "_.._elsewhere_model"
    assert file_safe("efficientnet_lite0") == "efficientnet_lite0" and "/" not in file_safe("a/b")


def test_an_unreachable_ray_address_gives_one_line_fast_and_writes_nothing(tmp_path):
    started = time.monotonic()
    result = ciid("evaluate", "--data", BUNDLED_SAMPLE, "--limit", "2", "--attacks", "fgsm", "--ray",
                  "127.0.0.1:1", "--out", tmp_path / "run")
    assert_one_line_error(result, 2, "--ray 127.0.0.1:1: no Ray cluster answers there")
    assert not (tmp_path / "run").exists() and time.monotonic() - started < 60


def test_a_full_database_gives_one_line_not_a_traceback(tmp_path):
    import sqlite3

    import click

    from ciidefence.cli.session import CommandFailed, report_errors

    connection = sqlite3.connect(tmp_path / "results.sqlite")
    connection.execute("CREATE TABLE t (x BLOB)")
    connection.execute("PRAGMA max_page_count = 3")  # a disk that is full after three pages

    @report_errors
    def fill() -> None:
        with connection:
            for _ in range(100):
                connection.execute("INSERT INTO t VALUES (?)", (bytes(4096),))

    with pytest.raises(CommandFailed, match="results database: database or disk is full") as raised:
        fill()
    assert isinstance(raised.value, click.ClickException) and raised.value.exit_code == 1
