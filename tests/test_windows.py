"""Training windows: frame spacing, action stacking, episode boundaries, split and statistics."""

import numpy as np
import pytest
from conftest import make_episode

from wm.data.store import EpisodeStore
from wm.data.windows import WindowConfig, WindowDataset, normalization_stats, split_episodes
from wm.errors import WMError


@pytest.mark.parametrize("in_memory", [True, False])
def test_windows_hold_the_right_frames_and_stacked_actions(small_store, in_memory):
    cfg = WindowConfig(num_hist=2, num_pred=1, frameskip=3)
    store = EpisodeStore.open(small_store)
    ds = WindowDataset(store, [1, 3], cfg, keys=("rgb", "proprio"), in_memory=in_memory)
    # episode 1 has 21 frames, episode 3 has 23; a window spans 7 rows
    assert len(ds) == (21 - 7 + 1) + (23 - 7 + 1)
    item = ds[16]  # second window of episode 3
    assert item["episode"] == 3 and item["start"] == 1
    rows = item["proprio"][:, 0].numpy()
    np.testing.assert_array_equal(rows, [1, 4, 7])
    assert item["rgb"].shape == (3, 8, 8, 3)
    want = make_episode(3, 23)["action"][1:7].reshape(2, 6)
    np.testing.assert_array_equal(item["action"].numpy(), want)


def test_windows_never_cross_episodes(small_store):
    store = EpisodeStore.open(small_store)
    ds = WindowDataset(store, range(5), WindowConfig(3, 1, 5), keys=("proprio",))
    for i in range(len(ds)):
        item = ds[i]
        episode = item["proprio"][:, 2].numpy()
        assert np.all(episode == item["episode"])


def test_too_long_windows_are_a_clear_error(small_store):
    with pytest.raises(WMError, match="long enough"):
        WindowDataset(EpisodeStore.open(small_store), [0], WindowConfig(3, 1, 10))


def test_split_is_deterministic_disjoint_and_complete():
    train, val = split_episodes(50, 0.2, seed=3)
    train2, val2 = split_episodes(50, 0.2, seed=3)
    np.testing.assert_array_equal(train, train2)
    assert len(val) == 10 and not set(train) & set(val)
    assert sorted([*train, *val]) == list(range(50))
    assert len(split_episodes(3, 0.1)[1]) == 1


def test_normalization_stats_skip_the_padding_action(small_store):
    store = EpisodeStore.open(small_store)
    stats = normalization_stats(store, [0, 1])
    rows = np.r_[np.arange(19), np.arange(20)]
    assert stats["action"]["mean"][1] == pytest.approx(rows.mean())
    assert stats["action"]["std"][0] == pytest.approx(np.r_[np.zeros(19), np.ones(20)].std())
