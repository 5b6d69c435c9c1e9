"""Evaluation and certification on a local Ray cluster: the same rows as a local run, and nothing lost when
processes die."""

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import torch

from ciidefence.evaluation import Evaluation, ResultStore
from ciidefence.evaluation.certification import Certification, CertifyConfig
from ciidefence.evaluation.cluster import ClusterOptions, certify_on_ray, run_on_ray
from conftest import BUNDLED_SAMPLE
from test_evaluation import data_dir, evaluate, evaluate_killed_after, table_rows  # noqa: F401  (the fixture)
from test_identity import rows_of, small_config


@pytest.fixture(scope="module")
def ray_cluster():
    """One local cluster of 2 CPUs for the module's tests (each start costs seconds)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def local_rows(config, path):
    """The rows of a local run with one torch thread, as each worker has: oneDNN's sums (and so the attacks'
    last digits) depend on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ResultStore(path) as store:
            Evaluation(config, torch.device("cpu")).run(store)
            return rows_of(store)
    finally:
        torch.set_num_threads(threads)


def worker_pids(busy: bool = False) -> list[int]:
    """Processes of our Ray actors (``ray::Worker``; ``ray::Worker.run`` while running a unit)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::Worker") and (not busy or "Worker.run" in title):
            found.append(int(entry.name))
    return found


class KillAWorkerOnce:
    """A progress bar that SIGKILLs a busy worker process when the first unit is written."""

    def __init__(self) -> None:
        self.killed: list[int] = []

    def update(self, n: int = 1) -> None:
        if not self.killed:
            victims = worker_pids(busy=True) or worker_pids()
            if victims:
                os.kill(victims[0], signal.SIGKILL)
                self.killed.append(victims[0])

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def test_ray_writes_the_same_rows_as_a_local_run(ray_cluster, data_dir, tmp_path):  # noqa: F811
    config = small_config(data_dir)
    expected = local_rows(config, tmp_path / "local.sqlite")
    with ResultStore(tmp_path / "ray.sqlite") as store:
        run_on_ray([Evaluation(config, torch.device("cpu"))], store, ClusterOptions(workers=2), "cpu")
        assert rows_of(store) == expected
        assert store.units_done() == len(Evaluation(config, torch.device("cpu")).units())


def test_a_worker_killed_mid_unit_loses_nothing_and_writes_nothing_twice(ray_cluster, data_dir, tmp_path):  # noqa: F811
    config = small_config(data_dir, defences=("none", "random-resize-pad"), attacks=("pgd",),
                          attack_overrides={"pgd": {"max_iter": "4", "restarts": "1"}}, batch_size=1)
    expected = local_rows(config, tmp_path / "local.sqlite")
    killer = KillAWorkerOnce()
    with ResultStore(tmp_path / "ray.sqlite") as store:
        run_on_ray([Evaluation(config, torch.device("cpu"))], store, ClusterOptions(workers=2), "cpu",
                   progress=lambda total: killer)
        assert killer.killed, "no worker was killed"
        assert rows_of(store) == expected  # the unique constraint would have refused a duplicate
        assert all(row.error is None for row in store.result_rows())


def test_an_unreadable_image_on_the_cluster_is_recorded_and_the_run_finishes(ray_cluster, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(BUNDLED_SAMPLE, data)
    broken = sorted(data.glob("*.JPEG"))[0]
    broken.write_bytes(broken.read_bytes()[:300])
    config = small_config(data, defences=("none", "jpeg"), attacks=("fgsm",), attack_overrides={})
    with ResultStore(tmp_path / "ray.sqlite") as store:
        run_on_ray([Evaluation(config, torch.device("cpu"))], store, ClusterOptions(workers=2, ship_data=True), "cpu")
        rows = store.result_rows()
    errors = [row for row in rows if row.error]
    assert {row.image for row in errors} == {broken.name} and "corrupt or truncated" in errors[0].error
    assert len(rows) == 4 * 2 * 2  # 4 images x 2 defences x (clean, fgsm)


def test_a_terminated_driver_stops_cleanly_and_resumes_on_ray_without_redoing_finished_units(data_dir,  # noqa: F811
                                                                                                tmp_path):
    options = ["--limit", "6", "--batch-size", "1", "--attacks", "fgsm", "--eps", "2/255",
               "--defences", "none,random-resize-pad", "--no-sanity"]
    reference = tmp_path / "reference"
    evaluate(data_dir, reference, *options, "--threads", "1")  # as each worker has
    killed = tmp_path / "killed"
    partial = evaluate_killed_after(data_dir, killed, [*options, "--ray", "--workers", "2"], rows=8,
                                    signum=signal.SIGTERM)  # as a batch scheduler stops a job at its time limit
    assert 8 <= len(partial) < len(table_rows(reference)), "the driver was not stopped partway"
    stderr = killed.with_suffix(".stderr").read_text()
    assert killed.with_suffix(".exit").read_text() == "143" and "ciid: error: terminated" in stderr
    assert "Traceback" not in stderr and "SIGTERM received" not in stderr  # no Python or Ray stack dump
    resumed = subprocess.run([sys.executable, "-m", "ciidefence.cli.main", "evaluate", "--data", str(data_dir),
                              "--out", str(killed), *options, "--ray", "--workers", "2", "--resume"],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert table_rows(killed) == table_rows(reference)


@pytest.mark.slow
def test_a_node_removed_mid_run_leaves_the_run_to_the_others(data_dir, tmp_path):  # noqa: F811
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    doomed = cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    try:
        config = small_config(data_dir, defences=("none", "jpeg"), attacks=("pgd",),
                              attack_overrides={"pgd": {"max_iter": "4", "restarts": "0"}}, batch_size=1)
        expected = local_rows(config, tmp_path / "local.sqlite")

        class RemoveTheNodeOnce(KillAWorkerOnce):
            def update(self, n: int = 1) -> None:
                if not self.killed:
                    cluster.remove_node(doomed)
                    self.killed.append(0)

        with ResultStore(tmp_path / "ray.sqlite") as store:
            run_on_ray([Evaluation(config, torch.device("cpu"))], store, ClusterOptions("auto", workers=2), "cpu",
                       progress=lambda total: RemoveTheNodeOnce())
            assert rows_of(store) == expected
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_a_dry_run_on_ray_prints_core_hours_and_wall_times(data_dir, tmp_path):  # noqa: F811
    result = evaluate(data_dir, tmp_path / "run", "--limit", "2", "--attacks", "fgsm", "--defences", "none,jpeg",
                      "--no-sanity", "--dry-run", "--ray", "--workers", "2")
    assert "core-hours" in result.stdout and "with 2 workers x 1 threads" in result.stdout
    assert not (tmp_path / "run").exists()


def test_ray_only_options_need_ray(data_dir, tmp_path):  # noqa: F811
    result = evaluate(data_dir, tmp_path / "run", "--limit", "1", "--workers", "2", check=False)
    assert result.returncode == 2 and "need --ray" in result.stderr
    shard = evaluate(data_dir, tmp_path / "run", "--limit", "1", "--shard", "3/2", check=False)
    assert shard.returncode == 2 and "--shard" in shard.stderr


def test_retry_errors_on_ray_reruns_only_the_batches_with_errors(ray_cluster, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(BUNDLED_SAMPLE, data)
    victim = sorted(data.glob("*.JPEG"))[0]
    original = victim.read_bytes()
    victim.write_bytes(b"\0" * len(original))  # unreadable, and the same size
    config = small_config(data, defences=("none", "jpeg"), attacks=("fgsm",), attack_overrides={})
    with ResultStore(tmp_path / "ray.sqlite") as store:
        run_on_ray([Evaluation(config, torch.device("cpu"))], store, ClusterOptions(workers=2), "cpu")
        before = store.result_rows()
    assert {row.image for row in before if row.error} == {victim.name}
    victim.write_bytes(original)
    with ResultStore(tmp_path / "ray.sqlite") as store:
        evaluation = Evaluation(config, torch.device("cpu"))
        assert evaluation.forget_failed(store) == 2  # the victim's batch under the clean experiment and FGSM
        run_on_ray([evaluation], store, ClusterOptions(workers=2), "cpu")
        after = store.result_rows()
    assert len(after) == len(before) and not [row for row in after if row.error]
    victims_batch = {item.key for item in evaluation.batches()[0]}
    assert victim.name in victims_batch
    assert [row for row in before if row.image not in victims_batch] == [
        row for row in after if row.image not in victims_batch]  # the other batch untouched, timings included


@pytest.mark.slow
def test_the_documented_token_recipe_refuses_a_client_without_the_token(tmp_path):
    """docs/SCALING.md's recipe, as written there: RAY_AUTH_MODE=token, a generated token, a head on a private
    address; a client without the mode is refused, one with it connects."""
    import socket
    import time

    ray_command = str(Path(sys.executable).with_name("ray"))
    current = Path("/tmp/ray/ray_current_cluster")  # the head writes its address here for others to join; restored
    before = current.read_bytes() if current.is_file() else None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    secured = {**os.environ, "HOME": str(tmp_path), "RAY_AUTH_MODE": "token"}
    subprocess.run([ray_command, "get-auth-token", "--generate"], env=secured, check=True, capture_output=True,
                   timeout=60)
    assert len((tmp_path / ".ray" / "auth_token").read_text().strip()) >= 32
    head = subprocess.Popen([ray_command, "start", "--head", "--block", "--node-ip-address=127.0.0.1",
                             f"--port={port}", "--num-cpus=1", "--include-dashboard=false"], env=secured,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        client = (f"import ray; ray.init(address='127.0.0.1:{port}', log_to_driver=False); "
                  "print('connected', ray.cluster_resources().get('CPU'))")
        open_client = {key: value for key, value in secured.items() if key != "RAY_AUTH_MODE"}
        refused = subprocess.run([sys.executable, "-c", client], env=open_client, capture_output=True, text=True,
                                 timeout=120)
        assert refused.returncode != 0 and "connected" not in refused.stdout
        allowed = subprocess.run([sys.executable, "-c", client], env=secured, capture_output=True, text=True,
                                 timeout=120)
        assert allowed.returncode == 0 and "connected 1.0" in allowed.stdout, allowed.stderr[-2000:]
    finally:
        head.send_signal(signal.SIGTERM)
        head.wait(60)
        if before is None:
            current.unlink(missing_ok=True)  # a stale address would send every later ray.init() to a dead head
        else:
            current.write_bytes(before)


def certificates_of(store):
    """The certificates, timings left out, in a fixed order."""
    return sorted((dataclasses.replace(row, seconds=0.0) for row in store.certificate_rows()),
                  key=lambda row: (row.image, row.setting))


def test_ray_certifies_the_radii_of_a_local_run_and_records_an_unreadable_image(ray_cluster, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(BUNDLED_SAMPLE, data)
    victim = sorted(data.glob("*.JPEG"))[1]
    victim.write_bytes(victim.read_bytes()[:300])
    config = CertifyConfig(data=str(data), labels=None, model="efficientnet_lite0", sigmas=(0.25,),
                           fronts=("none", "learned"), n0=8, n=48, batch_size=16, limit=3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker has
    try:
        with ResultStore(tmp_path / "local.sqlite") as store:
            Certification(config, torch.device("cpu")).run(store)
            expected = certificates_of(store)
    finally:
        torch.set_num_threads(threads)
    assert len(expected) == 6 and [row.image for row in expected if row.error] == [victim.name] * 2
    for ship_data in (False, True):
        with ResultStore(tmp_path / f"ray-{ship_data}.sqlite") as store:
            certify_on_ray(Certification(config, torch.device("cpu")), store,
                           ClusterOptions(workers=2, ship_data=ship_data), "cpu")
            assert certificates_of(store) == expected
