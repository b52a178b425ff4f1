"""The thread budget: WM_THREADS parsing, counting busy CPUs from /proc, fitting and re-fitting torch's threads."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from wm import threads
from wm.errors import WMError


def fake_proc(root, runnable: int, own_states: str):
    """A `/proc` with `runnable` tasks in loadavg and this process's threads in the given states (e.g. "RS")."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "loadavg").write_text(f"0.50 0.40 0.30 {runnable}/123 4567\n")
    for i, state in enumerate(own_states):
        task = root / "self" / "task" / str(100 + i)
        task.mkdir(parents=True)
        task.joinpath("stat").write_text(f"{100 + i} (py thon) {state} 1 2 3\n")  # a name with a space and a ')'
    return root


def test_busy_elsewhere_subtracts_this_process(tmp_path):
    assert threads.busy_elsewhere(samples=3, interval_s=0, proc=fake_proc(tmp_path, 3, "RRS")) == 1
    assert threads.busy_elsewhere(samples=1, proc=fake_proc(tmp_path / "idle", 1, "RS")) == 0
    assert threads.busy_elsewhere(proc=tmp_path / "nowhere") == 0  # no /proc: nothing known to be busy


def test_busy_elsewhere_sees_a_busy_process():
    if not threads.Path("/proc/loadavg").exists():
        pytest.skip("needs Linux /proc")
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert threads.busy_elsewhere(samples=5, interval_s=0.05) >= 1
    finally:
        spin.kill()


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5", ""])
def test_bad_setting_is_one_line_error(bad):
    with pytest.raises(WMError, match="WM_THREADS must be a positive whole number or auto"):
        threads.parse_threads(bad)


def test_budget_fits_pins_and_refits(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "usable_cpus", lambda: 4)
    busy = [3]
    try:
        budget = threads.ThreadBudget("auto", recheck_s=0.0, busy=lambda: busy[0])
        assert budget.threads == torch.get_num_threads() == 1
        busy[0] = 1
        budget.tick()  # the machine got quieter: take threads back
        assert budget.threads == torch.get_num_threads() == 3
        busy[0] = 9  # more busy than there are CPUs: still one thread
        budget.tick()
        assert budget.threads == 1
        pinned = threads.ThreadBudget("2", recheck_s=0.0, busy=lambda: 4)
        assert pinned.threads == torch.get_num_threads() == 2
        pinned.tick()
        assert pinned.threads == 2
        slow = threads.ThreadBudget("auto", recheck_s=3600.0, busy=lambda: busy[0])
        busy[0] = 0
        slow.tick()  # not yet time to look again
        assert slow.threads == 1
    finally:
        torch.set_num_threads(before)


def test_cli_rejects_bad_setting(monkeypatch, capsys):
    from wm.app.cli import main

    monkeypatch.setenv("WM_THREADS", "many")
    assert main(["envs"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "wm: error: WM_THREADS must be a positive whole number or auto, got 'many'"
    ]


def test_a_command_that_has_not_loaded_torch_sets_it_up_without_loading_it():
    code = (
        "import sys; from wm import threads; threads.configure('1'); assert 'torch' not in sys.modules; "
        "import torch; print(torch.get_num_threads())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
