"""A checkpoint's config, parsed once into frozen records: what the world model is, what it was trained on and how it
plans; and, for a policy, which world model it reads. The checks every job makes against them are their methods.

`load_checkpoint` returns a `CheckpointConfig`, `load_policy` a `PolicyCheckpointConfig` beside it; nothing reads
a checkpoint's `config.json` by string keys outside this module and the checkpoint writer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wm.errors import WMError


@dataclass(frozen=True)
class TrainedOn:
    """The data a world model was trained on (its config's `"data"`)."""

    store: str  # the training store as the config names it (shipped checkpoints: relative to the repository)
    spec: dict  # the store's spec (env, observation, action): equal specs mean the same kind of data
    train_episodes: tuple[int, ...] = ()
    val_episodes: tuple[int, ...] = ()  # held out: never trained on
    goal_policy: str | None = None  # the goal-directed policy that collected it (`wm.data.collection.goal_policy`)

    @classmethod
    def from_config(cls, data: dict) -> TrainedOn:
        return cls(data.get("store", ""), data.get("spec", {}), tuple(data.get("train_episodes", ())),
                   tuple(data.get("val_episodes", ())), data.get("goal_policy"))  # fmt: skip

    @property
    def env(self) -> dict:
        """The store's env record: `id`, `image_size`, `episode_steps`, `control_dt`."""
        return self.spec.get("env", {})

    @property
    def env_id(self) -> str:
        return self.env.get("id", "")

    @property
    def action_bounds(self) -> tuple[list, list]:
        """`(low, high)` of the env actions, per dim."""
        action = self.spec["action"]
        return action["low"], action["high"]

    @property
    def store_is_here(self) -> bool:
        return bool(self.store) and Path(self.store).is_dir()

    def require_env(self, env_id: str, whose: str = "the checkpoint") -> None:
        """A one-line error unless the model was trained on `env_id`."""
        if self.env_id != env_id:
            raise WMError(f"{whose} was trained on {self.env_id}, not {env_id}; pass --env {self.env_id}")

    def require_same_data(self, store, whose: str = "the world model") -> None:
        """A one-line error unless `store` (an open `EpisodeStore`) holds the kind of data the model was trained on
        (the same env, image size, episode length and action space)."""
        if store.spec != self.spec:
            raise WMError(
                f"{store.root} holds other data ({store.spec.get('env', {}).get('id')}) than {whose} was trained on "
                f"({self.env_id}); pass a store of {self.env_id} with the same image size and episode length"
            )

    def is_training_store(self, root) -> bool:
        """Whether the store at `root` is the training store: the one the config names (a relative name, as shipped
        checkpoints give it, from the working directory) or a copy whose path ends the same way (`data/WallMix3`
        names `/work/data/WallMix3` too, so its training episodes never pass for held-out ones)."""
        if not self.store:
            return False
        named, root = Path(self.store), Path(root).resolve()
        return root == named.resolve() or (not named.is_absolute() and root.parts[-len(named.parts) :] == named.parts)

    def is_training_data(self, store) -> bool:
        """Whether the open `EpisodeStore` `store` is the training store (`is_training_store`) or a copy of it that
        `wm improve` made and appended to (its `copy_of` attribute names the original): either way its first
        episodes are the ones this model's split names."""
        copy_of = store.attrs.get("copy_of", {}).get("store")
        return self.is_training_store(store.root) or (copy_of is not None and self.is_training_store(copy_of))

    def held_out(self, store) -> tuple[np.ndarray, str]:
        """`(episode indices, description)` of an open `EpisodeStore` that the model never trained on: the
        validation episodes of the training store, every episode of another store of the same data."""
        self.require_same_data(store, "the checkpoint")
        if not self.is_training_data(store):
            return np.arange(store.num_episodes), "all episodes of a store the model never trained on"
        val = np.asarray(self.val_episodes, dtype=np.int64)
        if len(val) == 0:
            raise WMError("the checkpoint's run held out no episodes (val_fraction=0); pass another store")
        if val.max() >= store.num_episodes:
            raise WMError(f"{store.root} has {store.num_episodes} episodes, fewer than the checkpoint's training "
                          "store; pass that store or a new one")  # fmt: skip
        return val, "validation episodes of the training store"


@dataclass(frozen=True)
class CheckpointConfig:
    """A world-model checkpoint's config."""

    path: Path  # the checkpoint directory
    model: dict  # the model family's settings, as `build_world_model` takes them
    trained_on: TrainedOn
    plan_preset: dict  # MPC settings chosen for this model (`planners.mpc.with_preset`; a guide policy's path is
    # given relative to the checkpoint and held here resolved); {} for none
    step: int | None = None  # training steps that made it
    init: dict | None = None  # `{"checkpoint", "step"}` it was fine-tuned from

    @classmethod
    def parse(cls, raw: dict, path) -> CheckpointConfig:
        if "policy" in raw:
            raise WMError(f"{path} is a policy checkpoint (`wm bc`), not a world model; pass its world model instead")
        if not isinstance(raw.get("model"), dict) or "kind" not in raw["model"]:
            raise WMError(f"{path}/config.json describes no model; pass a world-model checkpoint from `wm train`")
        plan = dict(raw.get("plan", {}))
        if isinstance(plan.get("guide"), str) and plan["guide"] != "none":  # relative to the checkpoint
            plan["guide"] = str(Path(path) / plan["guide"])
        return cls(Path(path), raw["model"], TrainedOn.from_config(raw.get("data", {})), plan, raw.get("step"),
                   raw.get("init"))  # fmt: skip

    @property
    def kind(self) -> str:
        """The model family."""
        return self.model["kind"]


@dataclass(frozen=True)
class PolicyCheckpointConfig:
    """A policy checkpoint's config: the policy's settings and the world model whose latents it reads."""

    path: Path
    policy: dict  # `PolicyConfig` settings
    world_model: dict  # `{"checkpoint": where it was, "sha256": of its weights}`
    data: dict  # what it was cloned from (store, spec, demos, episodes)
    refined_from: dict | None = None  # `{"path", "sha256", "kind"}` of the BC policy a refinement started from

    @classmethod
    def parse(cls, raw: dict, path) -> PolicyCheckpointConfig:
        if "policy" not in raw:
            raise WMError(f"{path} is a world model checkpoint, not a policy; pass a policy made by `wm bc`")
        return cls(Path(path), raw["policy"], raw["world_model"], raw.get("data", {}), raw.get("refined_from"))
