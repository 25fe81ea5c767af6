"""Interrupted work ends cleanly: Ctrl-C (SIGINT to the process group, as a terminal sends it) or
SIGTERM during a command-line sweep stops the workers, prints no traceback, says what was saved
and exits with 128 + the signal number; the next sweep resumes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _group_alive(pgid: int) -> list[str]:
    """Processes still in process group ``pgid`` (zombies excluded)."""
    out = subprocess.run(["ps", "-ewwo", "pgid=,stat=,args="], capture_output=True,
                         text=True).stdout
    alive = []
    for line in out.splitlines():
        fields = line.split(None, 2)
        if len(fields) >= 2 and fields[0] == str(pgid) and not fields[1].startswith("Z"):
            alive.append(line)
    return alive


def _as_a_terminal_job() -> None:
    """In the child, before it runs: Ctrl-C at its default, as in a terminal's job. A shell
    without job control starts `cmd &` with SIGINT ignored, an ignored signal stays ignored
    across exec, and Python then never raises KeyboardInterrupt: launched that way (a CI runner,
    `nohup make test &`), these tests would test nothing about Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args: list[str], tmp_path: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, CNNLAB_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(ROOT / "src"),
               CNNLAB_PROGRESS="1")
    return subprocess.Popen([sys.executable, "-m", "cnnlab", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,  # its own group, like a terminal's job
                            preexec_fn=_as_a_terminal_job)


def _wait_for_files(folder: Path, n: int, proc: subprocess.Popen[str], timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if folder.exists() and len(list(folder.glob("*.json"))) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"the command ended early: {proc.communicate()}")
        time.sleep(0.2)
    pytest.fail("no run finished in time")


SWEEP = ["sweep", "--dataset", "digits", "--param", "dropout", "--values", "0", "0.25", "0.5",
         "--seeds", "4", "--epochs", "40", "--width", "4", "--workers", "2", "--out", "out"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_sweep_stops_cleanly_and_resumes(tmp_path, sig):
    proc = _start(SWEEP, tmp_path)
    _wait_for_files(tmp_path / "cache", 1, proc, timeout=240)
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C: every process of the terminal's job gets it
    else:
        proc.send_signal(sig)  # `kill PID`: the command alone
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig
    assert "Traceback" not in err and "Error" not in err, err
    found = re.search(r"interrupted: (\d+) of 12 runs are finished and saved in (\S+); run the "
                      r"same command again to resume from them\.", err)
    assert found, err
    saved = len(list((tmp_path / "cache").glob("*.json")))
    assert int(found.group(1)) == saved and 1 <= saved < 12
    time.sleep(0.5)
    assert _group_alive(proc.pid) == []  # no worker survives
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_help_prints_as_written_with_an_example(tmp_path):
    for args in (["--help"], ["sweep", "--help"], ["bench", "--help"]):
        out = subprocess.run([sys.executable, "-m", "cnnlab", *args], capture_output=True,
                             text=True, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
                             cwd=tmp_path, check=True).stdout
        assert "%%" not in out
        if args != ["--help"]:
            assert f"example:\n  python -m cnnlab {args[0]} --" in out
        else:
            assert "a 95% confidence interval" in out


def _procs_with(marker: str) -> list[str]:
    """Live processes whose command line holds ``marker``."""
    out = subprocess.run(["ps", "-ewwo", "stat=,args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines()
            if marker in line and not line.split(None, 1)[0].startswith("Z")
            and "ps -ewwo" not in line]


def _wait_for_procs(marker: str, n: int, proc: subprocess.Popen[str], timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if len(_procs_with(marker)) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"the command ended early: {proc.communicate()}")
        time.sleep(0.2)
    pytest.fail(f"fewer than {n} processes with {marker!r} appeared")


def _gone(marker: str, timeout: float = 10.0) -> list[str]:
    end = time.monotonic() + timeout
    while time.monotonic() < end and _procs_with(marker):
        time.sleep(0.2)
    return _procs_with(marker)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_benchmark_leaves_no_torchrun_worker(tmp_path, sig):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), TMPDIR=str(tmp_path))  # the launch's
    proc = subprocess.Popen(  # temporary JSON path, and so its command line, names tmp_path
        [sys.executable, "-m", "cnnlab", "bench", "--parts", "ddp", "--quick",
         "--ddp-rounds", "500", "--ddp-train-size", "1000"], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=_as_a_terminal_job)
    _wait_for_procs(str(tmp_path), 3, proc, timeout=120)  # torchrun and its two workers
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C: the terminal's job
    else:
        proc.send_signal(sig)  # `kill PID`: the command alone must take torchrun down with it
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert "interrupted: the benchmark was stopped" in err and "Traceback" not in err, err
    assert _gone(str(tmp_path)) == []


def test_an_interrupted_torchrun_run_leaves_no_worker(tmp_path):
    out = tmp_path / "ddp.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1",
               CNNLAB_PROGRESS="0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "cnnlab.parallel", "--dataset", "digits", "--train-size", "1000", "--epochs",
         "200", "--threads", "1", "--json", str(out)], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=_as_a_terminal_job)
    _wait_for_procs(str(out), 3, proc, timeout=120)
    time.sleep(2)  # the workers are training
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal that runs torchrun
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert _gone(str(out)) == [] and _group_alive(proc.pid) == []


def test_interrupting_a_notebook_sweep_leaves_the_next_sweep_working(tmp_path):
    """In Jupyter, 'interrupt the kernel' during a sweep stops it; the next sweep, in the same
    kernel and with the same worker processes, still runs (and reuses the finished runs)."""
    jupyter_client = pytest.importorskip("jupyter_client")
    km = jupyter_client.KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(tmp_path), env=dict(os.environ, CNNLAB_CACHE=str(tmp_path / "cache"),
                                                 CNNLAB_PROGRESS="0", PYTHONPATH=str(ROOT / "src")))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)

        def run(code: str, timeout: float = 300) -> dict:
            return _reply(kc, kc.execute(code), timeout)

        assert run("from cnnlab.config import RunConfig\n"
                   "from cnnlab.experiments import sweep")["status"] == "ok"
        msg_id = kc.execute("sweep(RunConfig('digits', width=4, epochs=40), 'dropout', "
                            "[0.0, 0.25, 0.5], 4, workers=2)")
        end = time.monotonic() + 240
        while not list((tmp_path / "cache").glob("*.json")):
            assert time.monotonic() < end, "no run finished"
            time.sleep(0.2)
        km.interrupt_kernel()
        reply = _reply(kc, msg_id, 120)
        assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
        after = run("res = sweep(RunConfig('digits', width=4, epochs=1), 'dropout', [0.0, 0.5], "
                    "2, workers=2)\nassert len(res.rows) == 4, res.rows\nprint('ok')")
        assert after["status"] == "ok", after
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _reply(kc: object, msg_id: str, timeout: float) -> dict:
    """The execute reply of ``msg_id`` (other replies are skipped)."""
    end = time.monotonic() + timeout
    while True:
        msg = kc.get_shell_msg(timeout=max(1.0, end - time.monotonic()))
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg["content"]
