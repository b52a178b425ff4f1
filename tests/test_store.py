"""The episode store: invariant, crash recovery, locking, spec checks, bad input."""

import json
import os

import numpy as np
import pytest
import zarr
from conftest import KEYS, make_episode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_store_crash import tree_digest

from wm.app.cli import _config_from_args, build_parser, main
from wm.data.collection import CollectConfig, open_or_create
from wm.data.store import EpisodeStore
from wm.errors import WMError


def assert_invariant(path, expected_lengths):
    EpisodeStore.open(path, mode="a").close()  # a writer removes whatever a crash left behind
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


def leave_partial_episode(path, rows: int = 9) -> None:
    """What a writer killed mid-append leaves: `rows` uncommitted rgb rows, a grown but unwritten end slot (read
    back as the fill value -1) and the temporary file of a chunk write that never got renamed."""
    group = zarr.open_group(str(path), mode="r+")
    rgb = group["data/rgb"]
    rgb.resize((rgb.shape[0] + rows, 8, 8, 3))
    rgb[-rows:] = 200
    ends = group["meta/episode_ends"]
    ends.resize((ends.shape[0] + 1,))
    (path / "data" / "rgb" / "c" / "7" / "0" / "0" / "0.0123abcd.partial").write_bytes(b"torn")


def test_reader_ignores_a_partial_episode_and_changes_nothing(small_store, capsys):
    leave_partial_episode(small_store)
    before = tree_digest(small_store)
    with EpisodeStore.open(small_store) as store:
        assert store.num_episodes == 5 and store.read("rgb").shape[0] == 110
        np.testing.assert_array_equal(store.episode(4)["rgb"], make_episode(4, 24)["rgb"])
    assert tree_digest(small_store) == before
    assert store.uncommitted_rows == 9 and store.repaired_rows == 0
    assert main(["info", str(small_store)]) == 0
    assert "uncommitted  9 trailing frame(s)" in capsys.readouterr().out
    assert tree_digest(small_store) == before


def test_a_writer_removes_the_partial_episode(small_store, caplog):
    leave_partial_episode(small_store)
    with EpisodeStore.open(small_store, mode="a") as store:
        assert store.repaired_rows == 9 and store.num_episodes == 5
    assert "uncommitted" in caplog.text
    assert not any(small_store.rglob("*.partial"))
    assert zarr.open_group(str(small_store), mode="r")["meta/episode_ends"].shape == (5,)
    assert_invariant(small_store, [20, 21, 22, 23, 24])


def test_info_repair_removes_the_partial_episode(small_store, capsys):
    leave_partial_episode(small_store)
    assert main(["info", "--repair", "--json", str(small_store)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["episodes"] == 5 and info["repaired"] == "removed 9 frame(s) past the last intact episode"
    assert zarr.open_group(str(small_store), mode="r")["data/rgb"].shape[0] == 110


def damage_index(path, how: str) -> None:
    group = zarr.open_group(str(path), mode="r+")
    if how == "torn chunk":  # what a SIGKILL during the index chunk rewrite left on zarr < 3.1.3
        (path / "meta" / "episode_ends" / "c" / "0").write_bytes(b"\x28\xb5\x2f\xfd torn")
    elif how == "decreasing ends":
        group["meta/episode_ends"][2] = 30
    else:  # data shorter than the index
        group["data/action"].resize((70, 2))


@pytest.mark.parametrize("how, kept", [("torn chunk", 0), ("decreasing ends", 2), ("short data", 3)])
def test_damaged_index_is_a_one_line_error_and_repair_keeps_the_episodes_before_it(small_store, capsys, how, kept):
    damage_index(small_store, how)
    before = tree_digest(small_store)
    capsys.readouterr()
    assert main(["info", str(small_store)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("wm: error:") and "is damaged" in err[0], err
    assert f"`wm info --repair {small_store}` keeps the {kept} episode(s) before the damage" in err[0]
    with pytest.raises(WMError, match="is damaged"):
        EpisodeStore.open(small_store)
    assert tree_digest(small_store) == before  # neither a reader
    with pytest.raises(WMError, match="is damaged"):
        EpisodeStore.open(small_store, mode="a")  # nor a writer touches a damaged store without --repair
    assert main(["info", "--repair", "--json", str(small_store)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["episodes"] == kept and f"dropped {5 - kept} episode(s)" in info["repaired"]
    with EpisodeStore.open(small_store, mode="a") as store:
        store.append_episode(make_episode(kept, 7))
    assert_invariant(small_store, [20, 21, 22, 23, 24][:kept] + [7])


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
        (lambda e: e.update(rgb=e["rgb"] * 1.0), r"float with values in \[35, 44\]; .* floats in \[0, 1\]"),
        (lambda e: e.update(rgb=e["rgb"] / 127.5 - 1), r"float with values in \[-0.72"),  # [-1, 1] frames
        (lambda e: e.update(rgb=e["rgb"].astype(np.int64) + 250), r"outside uint8 \[0, 255\]"),
    ],
)
def test_malformed_episodes_are_rejected(small_store, mutate, message):
    episode = make_episode(5, 10)
    mutate(episode)
    with EpisodeStore.open(small_store, mode="a") as store, pytest.raises(WMError, match=message):
        store.append_episode(episode)
    assert_invariant(small_store, [20, 21, 22, 23, 24])


def test_float_frames_in_the_unit_range_are_scaled_to_uint8(small_store):
    episode = make_episode(5, 10)
    with EpisodeStore.open(small_store, mode="a") as store:
        store.append_episode({**episode, "rgb": episode["rgb"] / np.float32(255.0)})
    assert_invariant(small_store, [20, 21, 22, 23, 24, 10])


def record_io(monkeypatch) -> list[tuple]:
    """Monkeypatch os.fsync and os.replace to log `("fsync", path)` and `("replace", src, dst)` in call order."""
    events, fsync, replace = [], os.fsync, os.replace

    def logged_fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def logged_replace(src, dst):
        events.append(("replace", os.path.realpath(src), os.path.realpath(dst)))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", logged_fsync)
    monkeypatch.setattr(os, "replace", logged_replace)
    return events


def test_durable_append_fsyncs_files_and_directories_before_the_commit_marker(tmp_path, monkeypatch):
    path = tmp_path / "store"
    store = EpisodeStore.create(path, KEYS, {}, chunk_rows={"rgb": 16}, durable=True)
    store.append_episode(make_episode(0, 20))
    events = record_io(monkeypatch)
    store.append_episode(make_episode(1, 21))  # rewrites chunk 1 of rgb, shared with episode 0
    store.close()
    marker = os.path.realpath(path / "meta" / "episode_ends" / "c" / "0")
    commit = next(i for i, e in enumerate(events) if e[0] == "replace" and e[2] == marker)
    data = os.path.realpath(path / "data") + os.sep
    writes = [(i, e) for i, e in enumerate(events[:commit]) if e[0] == "replace" and e[2].startswith(data)]
    assert {e[2][len(data) :].split(os.sep)[0] for _, e in writes} == set(KEYS)
    for i, (_, src, dst) in writes:
        assert ("fsync", src) in events[:i], f"{dst} was renamed into place before its data was fsynced"
        assert ("fsync", os.path.dirname(dst)) in events[i:commit], f"{dst}'s directory not fsynced before commit"
    assert ("fsync", os.path.dirname(marker)) in events[commit:]  # the marker itself is durable on return


def test_collect_durable_reaches_the_store_and_default_mode_never_fsyncs(tmp_path, monkeypatch):
    args = build_parser().parse_args(["collect", "--env", "wm/Wall-v0", "--episodes", "1", "--out", "o", "--durable"])
    assert _config_from_args(CollectConfig, args).durable
    events = record_io(monkeypatch)
    for durable in (True, False):
        for _ in range(2):  # create, then append to the existing store
            with open_or_create(tmp_path / f"durable-{durable}", KEYS, {}, durable=durable) as store:
                del events[:]
                store.append_episode(make_episode(store.num_episodes, 5))
                assert any(e[0] == "fsync" for e in events) == durable


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
