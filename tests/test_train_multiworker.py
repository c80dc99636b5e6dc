"""``--strategy multiworker``: two worker processes on this computer train one epoch together, over loopback only.

tf.distribute.MultiWorkerMirroredStrategy with a TF_CONFIG per process (127.0.0.1, two free ports). Each process
runs in its own folder, standing for its own machine, with the same command line (``--out run``, relative): the
chief (worker 0) writes the run folder; the other worker writes nothing there, and the temporary folder it writes
instead (under its own TMPDIR here) is gone when it exits. TF_CONFIG's checks are tested without starting a cluster.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_app import launcher
from smearscope_core.errors import InputError
from smearscope_core.model_card import read_card
from tests.factories import PROJECT_ROOT, make_dataset

WORKERS = 2
TIMEOUT_S = 600  # both workers, from start to exit: generous, for two cores shared with other jobs
TINY = ["--image-size", "32", "--epochs", "1", "--batch-size", "16", "--seed", "3"]  # as tests/conftest.py's tiny_run


def _tf_config(ports: list[int], index: int) -> str:
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def _loopback_ports(count: int) -> list[int]:
    """``count`` different free ports on 127.0.0.1; skips where this computer cannot listen on loopback at all."""
    ports: set[int] = set()
    try:
        while len(ports) < count:
            ports.add(launcher.free_port("127.0.0.1"))
    except OSError as error:
        pytest.skip(f"cannot listen on 127.0.0.1 here ({error}), and the workers talk to each other over loopback")
    return sorted(ports)


def _tail(log: Path, chars: int = 4000) -> str:
    return f"--- {log}:\n{log.read_text(errors='replace')[-chars:]}"


@pytest.mark.slow
def test_two_local_workers_train_one_epoch_and_only_the_chief_writes_the_run_folder(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", per_class=12)  # the same data path for both, as on a shared file system
    ports = _loopback_ports(WORKERS)
    machines = [tmp_path / f"machine-{index}" for index in range(WORKERS)]
    processes, logs = [], []
    for index, machine in enumerate(machines):
        (machine / "tmp").mkdir(parents=True)
        env = os.environ | {
            "TF_CONFIG": _tf_config(ports, index),
            "TMPDIR": str(machine / "tmp"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
        }
        logs.append(machine / "train.log")
        with open(logs[-1], "wb") as output:
            command = [sys.executable, "-m", "train", "--strategy", "multiworker", "--data", str(data), "--out", "run"]
            processes.append(subprocess.Popen([*command, *TINY], cwd=machine, env=env, stdout=output,
                                              stderr=subprocess.STDOUT))  # fmt: skip
    deadline = time.monotonic() + TIMEOUT_S
    try:
        codes = [process.wait(timeout=max(deadline - time.monotonic(), 1)) for process in processes]
    except subprocess.TimeoutExpired:
        pytest.fail(f"the workers did not finish within {TIMEOUT_S} s\n" + "\n".join(map(_tail, logs)))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert codes == [0] * WORKERS, "\n".join(map(_tail, logs))

    chief_log, worker_log = (log.read_text() for log in logs)
    for log in (chief_log, worker_log):  # both in one cluster, each its own task
        assert f"one of {WORKERS} workers" in log and f"{WORKERS} replicas in sync" in log, log[-3000:]
    assert "this is worker 0" in chief_log and "this is worker 1" in worker_log

    # the chief wrote a complete run folder in its own folder, recording the strategy
    run = machines[0] / "run"
    assert {p.name for p in run.iterdir()} >= {"model.keras", "model_card.json", "metrics.json", "manifest.csv"}
    card = read_card(run / "model_card.json")  # validates against the schema
    assert card["training"]["settings"]["strategy"] == "multiworker" and card["training"]["epochs_run"] == 1
    sha = hashlib.sha256((run / "manifest.csv").read_bytes()).hexdigest()
    assert card["training"]["dataset"]["manifest_sha256"] == sha
    assert json.loads((run / "metrics.json").read_text())["test"]["n"] > 0

    # the other worker: nothing in its run folder, its temporary folder deleted
    assert not (machines[1] / "run").exists()
    assert "not the chief" in worker_log and not any((machines[1] / "tmp").iterdir())

    # the same split on both (each made it from the same data and seed), and the same test figures
    figures = [re.findall(r"\] +((?:train|val|test) +\d+ .*|test: .*)", log) for log in (chief_log, worker_log)]
    assert figures[0] == figures[1] and len(figures[0]) == 4, figures


BAD_TF_CONFIGS = {
    "missing": (None, "needs the TF_CONFIG environment variable"),
    "blank": ("  ", "needs the TF_CONFIG environment variable"),
    "not JSON": ("{cluster: 1}", "TF_CONFIG is not valid JSON"),
    "a list": ("[1, 2]", 'no "cluster"'),
    "no workers": ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}', 'no "cluster"'),
    "no port": ('{"cluster": {"worker": ["127.0.0.1"]}, "task": {"type": "worker", "index": 0}}', "host:port"),
    "a parameter server": ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 0}}',
                           "does not run"),
    "the same address twice": ('{"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker", "index": 0}}',
                               "the same address twice"),
    "no task": ('{"cluster": {"worker": ["a:1"]}}', 'no "task"'),
    "index out of range": ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
                           "task index 2 is outside"),
}  # fmt: skip


@pytest.mark.parametrize("tf_config, expected", BAD_TF_CONFIGS.values(), ids=BAD_TF_CONFIGS.keys())
def test_a_missing_or_malformed_tf_config_is_one_sentence(tf_config: str | None, expected: str) -> None:
    from train.run import cluster_task

    with pytest.raises(InputError, match=expected) as raised:
        cluster_task(tf_config)
    message = str(raised.value)
    assert "\n" not in message and message.endswith(".")


def test_a_good_tf_config_names_this_task() -> None:
    from train.run import cluster_task

    two = {"chief": ["10.0.0.1:12345"], "worker": ["node-2.cluster.local:12345", "[fd00::3]:12345"]}
    assert cluster_task(json.dumps({"cluster": two, "task": {"type": "worker", "index": 1}})) == ("worker", 1, 3)
    assert cluster_task(json.dumps({"cluster": two, "task": {"type": "chief", "index": 0}})) == ("chief", 0, 3)


def test_the_command_line_refuses_multiworker_without_tf_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from train.__main__ import main

    monkeypatch.delenv("TF_CONFIG", raising=False)
    out = tmp_path / "run"
    code = main(["--strategy", "multiworker", "--data", str(tmp_path), "--out", str(out)])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and error[-1].startswith("error: --strategy multiworker needs the TF_CONFIG"), error
    assert not out.exists()  # refused before anything was written
