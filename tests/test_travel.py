"""Runs that travel: text packs git can delta, resuming with the data elsewhere, one failure rule, retries."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys

import pytest
import torch

from ciidefence.errors import ConfigError
from ciidefence.evaluation import Evaluation, ResultStore
from ciidefence.evaluation.pack import PackError, pack_run, unpack_run
from ciidefence.evaluation.run_folder import open_run
from ciidefence.evaluation.summary import write_report
from conftest import BUNDLED_SAMPLE, REPO
from test_identity import small_config

ARCHIVE = [sys.executable, str(REPO / "benchmarks" / "tables" / "archive.py")]


def config_for(data):
    """4 images, the clean experiment and FGSM, two defences: 4 units of 2 images, 16 rows."""
    return small_config(data, defences=("none", "jpeg"), attacks=("fgsm",), attack_overrides={})


def run(config, run_dir, resume=False, retry_errors=False):
    evaluation = Evaluation(config, torch.device("cpu"))
    with open_run(run_dir, config, resume) as store:
        if retry_errors:
            evaluation.forget_failed(store)
        evaluation.run(store)
    return evaluation


def dump(run_dir):
    """Every table, row for row in insertion order."""
    with sqlite3.connect(run_dir / "results.sqlite") as connection:
        return {table: connection.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
                for table in ("results", "units", "meta")}


def outcomes(run_dir):
    """What each row says, without the timings (which differ between two runs of the same units)."""
    with sqlite3.connect(run_dir / "results.sqlite") as connection:
        return sorted(connection.execute(
            "SELECT image, defence_hash, experiment, pred_clean, pred_clean_defended, pred_adv, pred_defended_adv, "
            "l2, linf, error FROM results"))


def drop_last_unit(run_dir):
    """Make ``run_dir`` what it was before its last unit (2 images x 2 defences, the last 4 rows) was written."""
    with ResultStore(run_dir / "results.sqlite") as store:
        model, experiment, batch = store.connection.execute(
            "SELECT model, experiment, batch FROM units ORDER BY rowid DESC LIMIT 1").fetchone()
        images = [image for (image,) in store.connection.execute(
            "SELECT DISTINCT image FROM (SELECT image FROM results ORDER BY rowid DESC LIMIT 4)")]
        store.forget(model, [(experiment, batch, images)])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    for path in BUNDLED_SAMPLE.iterdir():
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    """A finished run folder, never changed by the tests (they copy it)."""
    run_dir = tmp_path_factory.mktemp("runs") / "finished"
    run(config_for(data), run_dir)
    return run_dir


def test_unpacking_a_pack_rebuilds_the_rows_meta_and_config_exactly(finished, tmp_path):
    outcome = pack_run(finished, tmp_path / "pack")
    assert set(outcome.values()) == {"written"}
    assert not list((tmp_path / "pack").glob("*.png")) and not (tmp_path / "pack" / "results.sqlite.xz").exists()
    unpack_run(tmp_path / "pack", tmp_path / "again")
    assert dump(tmp_path / "again") == dump(finished)
    assert len(dump(finished)["results"]) == 16
    assert (tmp_path / "again" / "config.json").read_text() == (finished / "config.json").read_text()
    assert set(pack_run(tmp_path / "again", tmp_path / "pack").values()) == {"unchanged"}


def test_packing_a_run_that_grew_appends_its_new_rows(finished, tmp_path):
    earlier = tmp_path / "earlier"
    shutil.copytree(finished, earlier)
    drop_last_unit(earlier)
    assert len(dump(earlier)["results"]) == 12
    pack_run(earlier, tmp_path / "pack")
    before = {name: (tmp_path / "pack" / name).read_bytes() for name in ("results.00000.jsonl", "units.jsonl")}
    outcome = pack_run(finished, tmp_path / "pack")
    assert outcome["results.00000.jsonl"] == outcome["units.jsonl"] == "appended"
    for name, old in before.items():
        new = (tmp_path / "pack" / name).read_bytes()
        assert new.startswith(old) and len(new) > len(old)
    unpack_run(tmp_path / "pack", tmp_path / "again")
    assert dump(tmp_path / "again") == dump(finished)


def test_finished_segments_never_change_when_the_run_grows(finished, tmp_path, monkeypatch):
    from ciidefence.evaluation import pack

    monkeypatch.setattr(pack, "SEGMENT_ROWS", 5)
    earlier = tmp_path / "earlier"
    shutil.copytree(finished, earlier)
    drop_last_unit(earlier)  # 12 rows: segments of 5, 5 and 2
    pack_run(earlier, tmp_path / "pack")
    outcome = pack_run(finished, tmp_path / "pack")  # 16 rows: 5, 5, 5 and 1
    assert [outcome[f"results.{i:05d}.jsonl"] for i in range(4)] == ["unchanged", "unchanged", "appended", "written"]
    unpack_run(tmp_path / "pack", tmp_path / "again")
    assert dump(tmp_path / "again") == dump(finished)
    shrunk = pack_run(earlier, tmp_path / "pack")  # a run whose rows were replaced: rewritten where they differ
    assert shrunk["results.00002.jsonl"] == "rewritten" and shrunk["results.00003.jsonl"] == "removed"
    unpack_run(tmp_path / "pack", tmp_path / "earlier-again")
    assert dump(tmp_path / "earlier-again") == dump(earlier)


def test_a_packed_run_resumes_on_a_copy_of_its_data_elsewhere_and_finishes_as_an_uninterrupted_run(
        data, finished, tmp_path):
    interrupted = tmp_path / "interrupted"
    shutil.copytree(finished, interrupted)
    drop_last_unit(interrupted)
    pack_run(interrupted, tmp_path / "pack")
    unpack_run(tmp_path / "pack", tmp_path / "elsewhere" / "run")
    moved = tmp_path / "moved-data"
    shutil.copytree(data, moved)
    config = config_for(moved)
    assert config.data != str(data)
    run(config, tmp_path / "elsewhere" / "run", resume=True)
    assert outcomes(tmp_path / "elsewhere" / "run") == outcomes(finished)
    stored = json.loads((tmp_path / "elsewhere" / "run" / "config.json").read_text())
    assert stored["data"] == str(data) and stored["data_digest"]  # the path as first given, and what it held

    changed = tmp_path / "changed-data"
    shutil.copytree(data, changed)
    victim = sorted(changed.glob("*.JPEG"))[-1]
    victim.write_bytes(victim.read_bytes() + b"\0")
    with pytest.raises(ConfigError, match="holds other images or labels"):
        run(config_for(changed), tmp_path / "elsewhere" / "run", resume=True)


def test_a_run_from_before_data_digests_resumes_by_the_images_and_labels_its_rows_hold(data, finished, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(finished, old)
    drop_last_unit(old)
    with ResultStore(old / "results.sqlite") as store:
        config = json.loads(store.get_meta("config"))
        del config["data_digest"]
        config["data"] = "/somewhere/else/imagenet-sample"
        store.set_meta("config", json.dumps(config, sort_keys=True, indent=2))
    relabelled = tmp_path / "relabelled"
    shutil.copytree(data, relabelled)
    labels = (relabelled / "labels.csv").read_text().splitlines()
    first = labels[1].split(",")
    labels[1] = f"{first[0]},{(int(first[1]) + 1) % 1000}"
    (relabelled / "labels.csv").write_text("\n".join(labels) + "\n")
    with pytest.raises(ConfigError, match="does not hold 1 of the images"):
        run(config_for(relabelled), old, resume=True)
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    run(config_for(moved), old, resume=True)
    assert outcomes(old) == outcomes(finished)


def test_a_unit_that_fails_is_recorded_as_error_rows_and_the_run_goes_on(data, tmp_path):
    config = config_for(data)
    evaluation = Evaluation(config, torch.device("cpu"))
    fgsm = next(e for e in evaluation.experiments if e.attack == "fgsm")
    real = evaluation.run_unit

    def out_of_memory_on_fgsm(experiment, batch):  # an injected fault: the first FGSM unit runs out of memory
        if experiment == fgsm and batch == evaluation.batches()[0]:
            raise MemoryError("injected: the worker ran out of memory")
        return real(experiment, batch)

    evaluation.run_unit = out_of_memory_on_fgsm
    with open_run(tmp_path / "run", config, resume=False) as store:
        evaluation.run(store)
        rows = store.result_rows()
        assert store.units_done() == 4
    failed = [row for row in rows if row.error]
    assert len(rows) == 16 and len(failed) == 4  # 2 images x 2 defences
    assert {row.experiment for row in failed} == {fgsm.digest}
    assert failed[0].error == "unit failed: MemoryError: injected: the worker ran out of memory"
    summary = write_report(tmp_path / "run")["summary.md"].read_text()
    assert "| fgsm 2/255 graybox | 2 | unit failed: MemoryError" in summary and "--retry-errors" in summary

    run(config, tmp_path / "run", resume=True, retry_errors=True)  # the fault is gone: only that unit reruns
    with ResultStore(tmp_path / "run" / "results.sqlite") as store:
        again = store.result_rows()
    assert not [row for row in again if row.error]
    kept = [row for row in rows if not row.error]
    failed_images = {row.image for row in failed}
    assert len(failed_images) == 2
    assert [row for row in again if row.experiment != fgsm.digest or row.image not in failed_images
            ] == kept  # every other row untouched, timings included


def test_retry_errors_from_the_command_line_reruns_only_the_batches_with_errors(data, tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(data, folder)
    victim = sorted(folder.glob("*.JPEG"))[0]
    original = victim.read_bytes()
    victim.write_bytes(b"\0" * len(original))  # unreadable, and the same size: the data's digest is unchanged
    options = ["--data", str(folder), "--out", str(tmp_path / "run"), "--limit", "4", "--batch-size", "2",
               "--defences", "none,jpeg", "--attacks", "fgsm", "--eps", "2/255", "--no-sanity"]
    command = [sys.executable, "-m", "ciidefence.cli.main", "evaluate"]
    first = subprocess.run([*command, *options], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert "recorded errors" in first.stderr and "--retry-errors" in first.stderr
    before = dump(tmp_path / "run")["results"]
    errors = [row for row in before if row[23] is not None]  # the error column
    assert {row[0] for row in errors} == {victim.name} and len(errors) == 4

    refused = subprocess.run([*command, *options, "--retry-errors"], capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2 and "--retry-errors" in refused.stderr and "--resume" in refused.stderr
    plain = subprocess.run([*command, *options, "--resume"], capture_output=True, text=True, timeout=600)
    assert plain.returncode == 0 and dump(tmp_path / "run")["results"] == before  # errors are kept without the flag

    victim.write_bytes(original)
    retried = subprocess.run([*command, *options, "--resume", "--retry-errors"], capture_output=True, text=True,
                             timeout=600)
    assert retried.returncode == 0, retried.stderr
    assert "2 batches that recorded errors run again" in retried.stderr
    after = dump(tmp_path / "run")["results"]
    assert len(after) == len(before) and not [row for row in after if row[23] is not None]
    victims_batch = set(sorted({row[0] for row in after})[:2])  # batches of 2 images in name order
    assert victim.name in victims_batch
    assert [row for row in before if row[0] not in victims_batch] == [
        row for row in after if row[0] not in victims_batch]  # the other batch untouched, timings included


def test_unpack_refuses_links_torn_packs_and_foreign_tables_and_leaves_nothing(finished, tmp_path):
    pack = tmp_path / "pack"
    pack_run(finished, pack)
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "x").write_text("mine")
    with pytest.raises(PackError, match="not empty"):
        unpack_run(pack, tmp_path / "occupied")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(PackError, match="symbolic link"):
        unpack_run(pack, tmp_path / "dangling")
    assert not (tmp_path / "nowhere").exists()

    torn = tmp_path / "torn"
    shutil.copytree(pack, torn)
    (torn / "results.00000.jsonl").write_bytes((torn / "results.00000.jsonl").read_bytes()[:-40])
    with pytest.raises(PackError, match="SHA-256"):
        unpack_run(torn, tmp_path / "out")

    linked = tmp_path / "linked"
    shutil.copytree(pack, linked)
    secret = tmp_path / "secret.txt"
    secret.write_text("do not copy")
    (linked / "meta.jsonl").unlink()
    (linked / "meta.jsonl").symlink_to(secret)
    with pytest.raises(PackError, match="symbolic link"):
        unpack_run(linked, tmp_path / "out")

    with pytest.raises(PackError, match="cap"):
        unpack_run(pack, tmp_path / "out", max_bytes=1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["pack", "occupied", "dangling", "torn", "linked", "secret.txt"])  # no half-built run folder


def test_an_earlier_format_pack_unpacks_and_one_with_a_trigger_or_bad_bytes_is_refused(finished, tmp_path):
    import lzma

    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "results.sqlite.xz").write_bytes(lzma.compress((finished / "results.sqlite").read_bytes()))
    unpack_run(legacy, tmp_path / "run")
    assert dump(tmp_path / "run") == dump(finished)

    trapped = tmp_path / "trapped.sqlite"
    shutil.copy(finished / "results.sqlite", trapped)
    with sqlite3.connect(trapped) as connection:
        connection.execute("CREATE TRIGGER flip AFTER INSERT ON results BEGIN "
                           "UPDATE results SET pred_defended_adv = label WHERE rowid = new.rowid; END")
    connection.close()
    (legacy / "results.sqlite.xz").write_bytes(lzma.compress(trapped.read_bytes()))
    with pytest.raises(PackError, match="trigger 'flip'"):
        unpack_run(legacy, tmp_path / "trapped-run")
    (legacy / "results.sqlite.xz").write_bytes(b"not xz at all")
    with pytest.raises(PackError, match="not a complete xz file"):
        unpack_run(legacy, tmp_path / "bad-run")
    assert not (tmp_path / "trapped-run").exists() and not (tmp_path / "bad-run").exists()
    assert not list(tmp_path.glob(".*unpacking*"))


def test_archive_script_packs_and_unpacks_with_one_line_errors(finished, tmp_path):
    packed = subprocess.run([*ARCHIVE, "pack", str(finished), str(tmp_path / "pack")], capture_output=True,
                            text=True, timeout=120)
    assert packed.returncode == 0 and "16 result rows" in packed.stdout, packed.stderr
    missing = subprocess.run([*ARCHIVE, "unpack", str(tmp_path / "nothing"), str(tmp_path / "run")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and missing.stderr.strip() == f"archive: error: {tmp_path / 'nothing'}: " \
                                                                 "no such pack folder"


def test_a_fuzzed_pack_unpacks_or_is_refused_with_a_pack_error_and_leaves_nothing(finished, tmp_path):
    """Bytes flipped, cut or inserted in any file, with the manifest's digest made to match half the time (so
    that the parser, not only the checksum, meets them): unpacking succeeds or raises PackError, nothing else."""
    import hashlib
    import random

    pack = tmp_path / "pack"
    pack_run(finished, pack)
    names = sorted(p.name for p in pack.iterdir())
    rng = random.Random(7)
    outcomes = {"unpacked": 0, "refused": 0}
    for case in range(60):
        mutated = tmp_path / f"case{case}"
        shutil.copytree(pack, mutated)
        target = mutated / rng.choice(names)
        content = bytearray(target.read_bytes())
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(max(len(content), 1))
            kind = rng.choice(["flip", "cut", "insert"])
            if kind == "flip" and content:
                content[at] = rng.randrange(256)
            elif kind == "cut":
                del content[at : at + rng.randint(1, 64)]
            else:
                content[at:at] = rng.choice([b"\x00", b"{", b'"', b"\n", b"]", b"NaN", b"1e999", b"-"])
        target.write_bytes(bytes(content))
        if target.name != "pack.json" and rng.random() < 0.5:
            manifest = json.loads((mutated / "pack.json").read_text())
            manifest["files"][target.name]["sha256"] = hashlib.sha256(bytes(content)).hexdigest()
            (mutated / "pack.json").write_text(json.dumps(manifest))
        out = tmp_path / f"out{case}"
        try:
            unpack_run(mutated, out)
            outcomes["unpacked"] += 1
        except PackError:
            outcomes["refused"] += 1
            assert not out.exists()
        shutil.rmtree(mutated)
        shutil.rmtree(out, ignore_errors=True)
    assert outcomes["refused"] > 0 and outcomes["unpacked"] > 0  # some mutations are harmless (a flipped digit)
    assert [p.name for p in tmp_path.iterdir()] == ["pack"]  # no temporary folder left behind
