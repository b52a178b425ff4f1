"""Imagination as an environment: the latent success head, step-by-step rollouts with restarts, and
`ImaginedVectorEnv` driven through gymnasium's vector API for a JEPA (the shipped PointMaze model with a success
head trained on top) and a tiny diffusion model."""

import numpy as np
import pytest
import torch
from conftest import SHIPPED, VELOCITY
from gymnasium.vector import AutoresetMode

from wm.data.store import EpisodeStore
from wm.errors import WMError
from wm.imagine import ImaginedVectorEnv, StoreStarts
from wm.models.checkpoint import load_checkpoint, read_config
from wm.models.diffusion.world_model import DiffusionWMConfig, DiffusionWorldModel


def test_the_success_head_trains_alone_on_a_frozen_world_model(jepa):
    model, config, _ = jepa
    shipped, _ = load_checkpoint(SHIPPED)
    trained = model.state_dict()
    moved = [key for key, value in shipped.state_dict().items() if not torch.equal(value, trained[key])]
    assert moved and all(key.startswith("success.") for key in moved)  # the head learned, the world model did not
    assert model.success_mode == "goal" and read_config(config.path)["train"]["only"] == "success"


def test_the_latent_success_head_separates_reached_from_unreached_goals(jepa, maze):
    model, _, _ = jepa
    with EpisodeStore.open(maze) as store:
        ep = store.episode(0, ["rgb", "proprio", "state"])
    obs = {"rgb": torch.as_tensor(ep["rgb"])[None], "proprio": torch.as_tensor(ep["proprio"])[None]}
    goal_proprio = torch.as_tensor(ep["proprio"][-1:]).clone()
    goal_proprio[:, list(VELOCITY)] = 0
    with torch.no_grad():
        z = model.encode(obs)[0]  # (L, N, D)
        z_goal = model.encode({"rgb": torch.as_tensor(ep["rgb"][-1:])[None], "proprio": goal_proprio[None]})[0]
        prob = torch.sigmoid(model.success_logits(z, z_goal)).numpy()
    from envs.registry import make_env

    env = make_env("wm/PointMaze-v0").unwrapped
    labels = np.array([env.is_success(s, ep["state"][-1]) for s in ep["state"]])
    assert labels.any() and not labels.all()
    assert prob[labels].mean() > prob[~labels].mean() + 0.3


def test_step_by_step_imagination_with_restarts_matches_batched_rollouts(jepa):
    model, _, _ = jepa
    torch.manual_seed(0)
    h, a = model.spec.num_hist, model.spec.block_action_dim
    z, past, acts = torch.randn(4, h, 1, 74), torch.randn(4, h - 1, a), torch.randn(4, 6, a)
    with torch.no_grad():
        state = model.start_imagination(z, past)
        for i in range(3):
            model.imagine_step(state, acts[:, i])
        z_new, past_new = torch.randn(2, h, 1, 74), torch.randn(2, h - 1, a)
        model.restart_imagination(state, torch.tensor([1, 3]), z_new, past_new)
        steps = torch.stack([model.imagine_step(state, acts[:, 3 + i]) for i in range(3)], 1)
        fresh = model.rollout(z_new, acts[[1, 3], 3:], past_actions=past_new)
        going_on = model.rollout(z[[0, 2]], acts[[0, 2]], past_actions=past[[0, 2]])[:, 3:]
    torch.testing.assert_close(steps[[1, 3]], fresh, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(steps[[0, 2]], going_on, atol=1e-5, rtol=1e-4)


def test_restarts_folded_into_steps_match_batched_rollouts_across_steps_and_repeats(jepa):
    """Restarts are encoded by the next step (their history frames ride along in its trunk call): rows restarted on
    consecutive steps, and a row restarted twice before a step (the second start wins), still imagine exactly what
    a fresh rollout from their start does."""
    model, _, _ = jepa
    torch.manual_seed(1)
    h, a = model.spec.num_hist, model.spec.block_action_dim
    z, past, acts = torch.randn(5, h, 1, 74), torch.randn(5, h - 1, a), torch.randn(5, 8, a)
    starts = {k: (torch.randn(1, h, 1, 74), torch.randn(1, h - 1, a)) for k in ("r1", "r3_first", "r3", "r0")}
    with torch.no_grad():
        state = model.start_imagination(z, past)
        steps = [model.imagine_step(state, acts[:, 0])]
        model.restart_imagination(state, torch.tensor([1]), *starts["r1"])
        model.restart_imagination(state, torch.tensor([3]), *starts["r3_first"])
        model.restart_imagination(state, torch.tensor([3]), *starts["r3"])  # replaces the first restart of row 3
        steps.append(model.imagine_step(state, acts[:, 1]))
        model.restart_imagination(state, torch.tensor([0]), *starts["r0"])  # the next step: another row
        steps += [model.imagine_step(state, acts[:, i]) for i in range(2, 6)]
        steps = torch.stack(steps, 1)  # (5, 6, 1, 74)
        expect = {
            1: model.rollout(starts["r1"][0], acts[1:2, 1:6], past_actions=starts["r1"][1])[0],
            3: model.rollout(starts["r3"][0], acts[3:4, 1:6], past_actions=starts["r3"][1])[0],
            0: model.rollout(starts["r0"][0], acts[0:1, 2:6], past_actions=starts["r0"][1])[0],
        }
        untouched = model.rollout(z[[2, 4]], acts[[2, 4], :6], past_actions=past[[2, 4]])
    torch.testing.assert_close(steps[1, 1:], expect[1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(steps[3, 1:], expect[3], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(steps[0, 2:], expect[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(steps[[2, 4]], untouched, atol=1e-5, rtol=1e-4)


def drive(env, steps: int, seed: int = 0):
    """Random actions from the env's own (seeded) action space; returns the observations and rewards."""
    env.action_space.seed(seed)
    obs, info = env.reset(seed=seed)
    assert env.observation_space.contains(obs) and env.single_observation_space["goal"].shape == obs["goal"].shape[1:]
    history = [obs]
    rewards = []
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs)
        assert reward.shape == terminated.shape == truncated.shape == (env.num_envs,)
        assert info["success_prob"].shape == (env.num_envs,) and info["_success_prob"].all()
        history.append(obs)
        rewards.append(reward)
    return history, np.stack(rewards)


def test_imagined_env_speaks_gymnasiums_vector_api_for_the_jepa(jepa, maze):
    model, _, _ = jepa
    starts = StoreStarts(model, maze, goal_blocks=(1, 4), velocity_dims=VELOCITY)
    env = ImaginedVectorEnv(model, starts, num_envs=8, horizon=3, history=2)
    assert env.single_observation_space["latents"].shape == (2, 1, 74)
    assert env.single_action_space.shape == (model.spec.block_action_dim,)
    first, rewards = drive(env, 7, seed=3)
    again, rewards_again = drive(env, 7, seed=3)  # seeding: the same starts, goals and futures
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a["latents"], b["latents"])
    np.testing.assert_array_equal(rewards, rewards_again)
    other, _ = drive(env, 1, seed=4)
    assert not np.array_equal(first[0]["goal"], other[0]["goal"])
    assert env.real_env_steps == 0 and env.imagined_steps > 0

    # NEXT_STEP autoreset: an episode ends by success or after `horizon` blocks; the next step is the new start
    env.reset(seed=5)
    actions = np.zeros(env.action_space.shape, np.float32)
    done = np.zeros(env.num_envs, bool)
    ended = 0
    for _ in range(8):
        obs, reward, terminated, truncated, info = env.step(actions)
        assert (reward[done] == 0).all() and not (terminated | truncated)[done].any()
        assert (info["imagined_step"][done] == 0).all() and (info["imagined_step"] <= env.horizon).all()
        assert not (terminated & truncated).any() and (info["imagined_step"][truncated] == env.horizon).all()
        done = terminated | truncated
        assert done[info["imagined_step"] == env.horizon].all()
        ended += int(done.sum())
    assert ended >= env.num_envs


def test_bf16_and_compiled_imagination_follow_float32(jepa, maze):
    """Under `bf16` autocast and with a compiled step, the env imagines what float32 eager does, up to bf16's
    rounding and the compiled kernels' float reordering, and its observations stay float32 (restarts included)."""
    model, _, path = jepa
    starts = StoreStarts(model, maze, goal_blocks=(1, 4), velocity_dims=VELOCITY)

    def latents(world_model, **options):
        env = ImaginedVectorEnv(world_model, starts, num_envs=8, horizon=3, reward="probability", **options)
        history, _ = drive(env, 7, seed=3)  # two restarts per env
        return np.stack([obs["latents"] for obs in history])

    reference = latents(model)
    bf16 = latents(model, bf16=True)
    assert bf16.dtype == np.float32
    assert 0 < np.linalg.norm(bf16 - reference) / np.linalg.norm(reference) < 0.05
    compiled = latents(load_checkpoint(path)[0], compile=True)  # its own copy: compiling changes the model
    np.testing.assert_allclose(compiled, reference, atol=1e-4, rtol=1e-4)


def test_same_step_autoreset_puts_the_last_observation_in_info(jepa, maze):
    model, _, _ = jepa
    starts = StoreStarts(model, maze, velocity_dims=VELOCITY)
    env = ImaginedVectorEnv(model, starts, num_envs=4, horizon=2, autoreset_mode=AutoresetMode.SAME_STEP,
                            reward="probability")  # fmt: skip
    env.reset(seed=0)
    actions = np.zeros(env.action_space.shape, np.float32)
    env.step(actions)
    obs, reward, terminated, truncated, info = env.step(actions)
    assert truncated.all() and not terminated.any() and "final_obs" in info
    assert ((0 <= reward) & (reward <= 1)).all()
    assert not np.array_equal(info["final_obs"]["latents"], obs["latents"])  # fresh starts came at once


def test_imagined_rollouts_of_recorded_actions_track_the_recorded_future(jepa, maze):
    model, _, _ = jepa
    fs, h, blocks = model.spec.frameskip, model.spec.num_hist, 6
    with EpisodeStore.open(maze) as store:
        episodes = [store.episode(i, ["rgb", "proprio", "action"]) for i in range(store.num_episodes)]
    t = (h - 1) * fs
    pairs = [(i, t, t + fs) for i in range(len(episodes))]
    starts = StoreStarts(model, maze, pairs=pairs)
    env = ImaginedVectorEnv(model, starts, num_envs=len(pairs), horizon=blocks, reward="probability")  # no early end
    obs, _ = env.reset(seed=0)
    with torch.no_grad():
        real = torch.stack(
            [model.encode({k: torch.as_tensor(ep[k])[None] for k in ("rgb", "proprio")})[0] for ep in episodes]
        )  # fmt: skip  (E, L, N, D)
    model_err = copy_err = 0.0
    last = torch.as_tensor(obs["latents"][:, -1])
    for k in range(blocks):
        block = np.stack([ep["action"][t + k * fs : t + (k + 1) * fs].reshape(-1) for ep in episodes])
        obs, *_ = env.step(block)
        target = real[:, t + (k + 1) * fs]
        model_err += float(((torch.as_tensor(obs["latents"][:, -1]) - target) ** 2).mean())
        copy_err += float(((last - target) ** 2).mean())
    assert model_err < 0.5 * copy_err


def tiny_diffusion(**overrides) -> DiffusionWorldModel:
    cfg = {
        "image_size": 64,
        "num_hist": 2,
        "frameskip": 5,
        "action_dim": 2,
        "action_low": [-1.0, -1.0],
        "action_high": [1.0, 1.0],
        "unet": {"channels": [8, 8, 8], "layers_per_block": 1, "norm_groups": 4, "patch_size": 2},
        "success_width": 8,
        "sampling_steps": 1,
        **overrides,
    }
    torch.manual_seed(0)
    return DiffusionWorldModel(DiffusionWMConfig(**cfg)).eval()


def test_imagined_env_runs_a_diffusion_model_too(maze):
    model = tiny_diffusion()
    starts = StoreStarts(model, maze, velocity_dims=VELOCITY)
    assert not starts.frames.precomputed  # pixels are encoded when drawn
    env = ImaginedVectorEnv(model, starts, num_envs=3, horizon=2, render_mode="rgb_array")
    first, _ = drive(env, 4, seed=1)
    again, _ = drive(env, 4, seed=1)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a["latents"], b["latents"])
    assert first[0]["latents"].shape == (3, 1, 64 * 64, 3)
    assert env.render().shape == (3, 64, 64, 3)
    bf16, _ = drive(ImaginedVectorEnv(model, starts, num_envs=3, horizon=2, bf16=True), 4, seed=1)
    assert all(obs["latents"].dtype == np.float32 and np.isfinite(obs["latents"]).all() for obs in bf16)
    with pytest.raises(WMError, match="cannot compile its imagination"):
        ImaginedVectorEnv(model, starts, num_envs=3, compile=True)


def test_imagination_needs_a_success_head(maze):
    model = tiny_diffusion(success_head=False)
    with pytest.raises(WMError, match="success head"):
        ImaginedVectorEnv(model, StoreStarts(model, maze), num_envs=2)


def test_user_goal_images_become_the_goals_and_frames_can_be_looked_at(jepa, maze):
    model, _, _ = jepa
    with EpisodeStore.open(maze) as store:
        ep = store.episode(1, ["rgb", "proprio"])
    goals = {"rgb": ep["rgb"][[-1]], "proprio": ep["proprio"][[-1]]}
    starts = StoreStarts(model, maze, goals=goals, velocity_dims=VELOCITY)
    env = ImaginedVectorEnv(model, starts, num_envs=5, horizon=4)
    obs, _ = env.reset(seed=0)
    proprio = torch.as_tensor(goals["proprio"]).clone()
    proprio[:, list(VELOCITY)] = 0
    with torch.no_grad():
        expected = model.encode({"rgb": torch.as_tensor(goals["rgb"])[None], "proprio": proprio[None]})[0, 0]
    np.testing.assert_allclose(obs["goal"], expected.expand(5, -1, -1).numpy(), atol=1e-6)
    frames = env.render()
    assert frames.shape == (5, 64, 64, 3) and frames.dtype == np.uint8


def test_an_ensemble_of_success_heads_charges_imagined_rewards_for_its_disagreement(maze, jepa, tmp_path):
    from wm.app.train import TrainRunConfig, run_train
    from wm.models.success_head import SuccessEnsemble

    out = tmp_path / "ensemble"
    settings = ["success_heads=3", "only=success", "val_every=30", "lr=2e-3"]
    run_train(TrainRunConfig(str(maze), "jepa", str(out), steps=30, init=SHIPPED, overrides=settings))
    model, _ = load_checkpoint(out / "model")
    assert isinstance(model.success, SuccessEnsemble) and len(model.success.heads) == 3
    first, second = (head.out[-1].weight for head in model.success.heads[:2])
    assert not torch.equal(first, second)  # each member from its own initial weights

    starts = StoreStarts(model, maze, goal_blocks=(1, 4), velocity_dims=VELOCITY)
    rewards = {}
    for penalty in (0.0, 2.0):
        env = ImaginedVectorEnv(model, starts, num_envs=8, horizon=3, reward="probability",
                                uncertainty_penalty=penalty)  # fmt: skip
        env.reset(seed=1)
        _, rewards[penalty], _, _, info = env.step(np.zeros(env.action_space.shape, np.float32))
    spread = info["success_disagreement"]
    assert spread.shape == (8,) and (spread >= 0).all() and spread.max() > 0
    np.testing.assert_allclose(rewards[2.0], info["success_prob"] - 2.0 * spread, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rewards[0.0], info["success_prob"], rtol=1e-5, atol=1e-6)

    single, _, _ = jepa
    with pytest.raises(WMError, match="ensemble of success heads"):
        ImaginedVectorEnv(single, starts, num_envs=2, reward="probability", uncertainty_penalty=1.0)


def test_success_grad_lets_the_success_loss_train_the_encoder(jepa):
    """`success_grad=true`: the success head's loss reaches the encoder (through the frames and the goal); by default
    the head learns on detached latents and the encoder's gradient is the world model's alone."""
    import copy

    model = copy.deepcopy(jepa[0]).train()
    gen = torch.Generator().manual_seed(0)
    batch = {"rgb": torch.randint(0, 256, (2, 4, 64, 64, 3), dtype=torch.uint8, generator=gen),
             "proprio": torch.randn(2, 4, 4, generator=gen), "action": torch.randn(2, 3, 10, generator=gen),
             "success": torch.tensor([[0, 0, 1, 1], [0, 1, 0, 1]]),
             "goal_rgb": torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8, generator=gen),
             "goal_proprio": torch.randn(2, 4, generator=gen)}  # fmt: skip

    def encoder_grads(success_grad: bool, weight: float) -> list[torch.Tensor]:
        model.cfg.success_grad, model.cfg.success_weight = success_grad, weight
        model.zero_grad()
        torch.manual_seed(0)  # SIGReg's projections and the decoder's frames
        model(batch)[0].backward()
        return [p.grad.clone() for p in model.encoder.parameters()]

    for success_grad, moved in ((False, False), (True, True)):
        without, with_head = encoder_grads(success_grad, 0.0), encoder_grads(success_grad, 1.0)
        assert any(not torch.allclose(a, b) for a, b in zip(without, with_head, strict=True)) == moved
