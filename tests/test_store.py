"""The episode store: invariant, crash recovery, locking, spec checks, bad input."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr
from conftest import KEYS, make_episode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wm.data.store import EpisodeStore
from wm.errors import WMError


def assert_invariant(path, expected_lengths):
    EpisodeStore.open(path).close()  # opening repairs whatever a crash left behind
    group = zarr.open_group(str(path), mode="r")
    ends = group["meta/episode_ends"][:]
    assert list(np.diff(ends, prepend=0)) == list(expected_lengths)
    for key in KEYS:
        assert group[f"data/{key}"].shape[0] == (ends[-1] if len(ends) else 0)
    with EpisodeStore.open(path) as store:
        for i, length in enumerate(expected_lengths):
            got = store.episode(i)
            want = make_episode(i, length)
            for key in KEYS:
                np.testing.assert_array_equal(got[key], want[key])


def test_plain_zarr_reads_what_the_store_wrote(small_store):
    assert_invariant(small_store, [20, 21, 22, 23, 24])
    group = zarr.open_group(str(small_store), mode="r")
    assert group.attrs["schema_version"] == 1
    assert group["data/rgb"].chunks[0] == 16


def test_append_reopen_continues(small_store):
    with EpisodeStore.open(small_store, mode="a") as store:
        assert store.append_episode(make_episode(5, 7)) == 5
    assert_invariant(small_store, [20, 21, 22, 23, 24, 7])


def test_trailing_uncommitted_rows_are_truncated_on_open(small_store, caplog):
    group = zarr.open_group(str(small_store), mode="r+")
    rgb = group["data/rgb"]
    rgb.resize((rgb.shape[0] + 9, 8, 8, 3))
    ends = group["meta/episode_ends"]
    ends.resize((ends.shape[0] + 1,))  # grown, never written: reads as fill value -1
    with EpisodeStore.open(small_store) as store:
        assert store.repaired_rows == 9
        assert store.num_episodes == 5
    assert "uncommitted" in caplog.text
    assert_invariant(small_store, [20, 21, 22, 23, 24])


def test_reader_does_not_truncate_while_a_writer_holds_the_lock(small_store):
    writer = EpisodeStore.open(small_store, mode="a")
    try:
        rgb = zarr.open_group(str(small_store), mode="r+")["data/rgb"]
        rgb.resize((rgb.shape[0] + 3, 8, 8, 3))  # the writer's in-flight rows
        reader = EpisodeStore.open(small_store)
        assert reader.num_frames == 110 and reader.repaired_rows == 0
        assert rgb.shape[0] == 113
        assert reader.read("rgb").shape[0] == 110
    finally:
        writer.close()


def test_second_writer_is_refused(small_store):
    with EpisodeStore.open(small_store, mode="a"):
        with pytest.raises(WMError, match="being written by another process"):
            EpisodeStore.open(small_store, mode="a")


def test_nan_action_is_rejected_and_nothing_written(small_store):
    bad = make_episode(5, 10)
    bad["action"][3, 1] = np.nan
    with EpisodeStore.open(small_store, mode="a") as store:
        with pytest.raises(WMError, match="NaN or inf"):
            store.append_episode(bad)
    assert_invariant(small_store, [20, 21, 22, 23, 24])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda e: e.pop("proprio"), "missing"),
        (lambda e: e.update(rgb=e["rgb"][:, :4]), "shape"),
        (lambda e: e.update(action=e["action"][:5]), "length"),
    ],
)
def test_malformed_episodes_are_rejected(small_store, mutate, message):
    episode = make_episode(5, 10)
    mutate(episode)
    with EpisodeStore.open(small_store, mode="a") as store, pytest.raises(WMError, match=message):
        store.append_episode(episode)
    assert_invariant(small_store, [20, 21, 22, 23, 24])


def test_create_refuses_existing_data(small_store, tmp_path):
    before = sorted(p.name for p in small_store.rglob("*"))
    with pytest.raises(WMError, match="already exists"):
        EpisodeStore.create(small_store, KEYS, {})
    assert sorted(p.name for p in small_store.rglob("*")) == before


def test_missing_array_and_foreign_dirs_give_clear_errors(small_store, tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hi")
    with pytest.raises(WMError, match="not a wm episode store"):
        EpisodeStore.open(tmp_path / "plain")
    with pytest.raises(WMError, match="no episode store"):
        EpisodeStore.open(tmp_path / "nowhere")
    (small_store / "data" / "proprio" / "zarr.json").unlink()
    with pytest.raises(WMError, match="missing data/proprio"):
        EpisodeStore.open(small_store)


def test_corrupt_chunk_is_reported(small_store):
    chunk = next(p for p in (small_store / "data" / "rgb").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(b"garbage")
    with EpisodeStore.open(small_store) as store, pytest.raises(WMError, match="damaged"):
        store.read("rgb")


class Crash(Exception):
    pass


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=st.lists(st.tuples(st.integers(1, 30), st.one_of(st.none(), st.integers(0, 20))), min_size=1, max_size=6))
def test_invariant_holds_under_random_append_and_crash_sequences(tmp_path_factory, monkeypatch, plan):
    """Each step appends an episode of the given length; a crash point k kills the append after k writes."""
    path = tmp_path_factory.mktemp("s") / "store"
    EpisodeStore.create(path, KEYS, {}, chunk_rows={"rgb": 8, "action": 8, "proprio": 8}).close()
    committed = []
    for length, crash_after in plan:
        store = EpisodeStore.open(path, mode="a")
        calls = {"n": 0}
        real_set, real_resize = zarr.Array.__setitem__, zarr.Array.resize

        def counted(fn, calls=calls, crash_after=crash_after):
            def wrapper(self, *a, **k):
                if crash_after is not None and calls["n"] >= crash_after:
                    raise Crash
                calls["n"] += 1
                return fn(self, *a, **k)

            return wrapper

        monkeypatch.setattr(zarr.Array, "__setitem__", counted(real_set))
        monkeypatch.setattr(zarr.Array, "resize", counted(real_resize))
        try:
            store.append_episode(make_episode(len(committed), length))
            committed.append(length)
        except Crash:
            pass
        finally:
            monkeypatch.setattr(zarr.Array, "__setitem__", real_set)
            monkeypatch.setattr(zarr.Array, "resize", real_resize)
            store.close()  # a dead process's flock is released by the kernel
        assert_invariant(path, committed)


WRITER = """
import sys, time
sys.path.insert(0, {tests!r})
from conftest import KEYS, make_episode
from wm.data.store import EpisodeStore
store = EpisodeStore.open({path!r}, mode="a")
i = store.num_episodes
store.append_episode(make_episode(i, 37))
i += 1
print("ready", flush=True)
while True:
    store.append_episode(make_episode(i, 37))
    i += 1
"""


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.13, 0.3])
def test_sigkill_mid_append_keeps_committed_episodes(tmp_path, delay):
    path = tmp_path / "store"
    EpisodeStore.create(path, KEYS, {}).close()
    script = WRITER.format(tests=os.path.dirname(__file__), path=str(path))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with EpisodeStore.open(path) as store:
        n = store.num_episodes
    assert n > 0
    assert_invariant(path, [37] * n)
