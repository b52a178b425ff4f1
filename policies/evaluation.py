"""A policy on goal-reaching problems (`wm.evaluation.goal_reaching`): in the real envs as a `PolicyController`,
beside the zero-action baseline on the same pairs, and optionally on the same pairs inside its world model (judged
by the success head). `wm eval-policy` and `wm refine --eval-env` (BC and refined on the same pairs) use it; the
report is the one every goal-reaching command writes (`goal_reaching.goal_report` / `write_report`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from policies.controller import PolicyController, act_block
from policies.protocol import Policy
from wm.device import module_device
from wm.evaluation.goal_reaching import (
    GoalEpisodes,
    ImaginedEpisodes,
    Problems,
    goal_report,
    run_controller,
    run_imagined,
    run_zero_actions,
)


@dataclass
class PolicyEvaluation:
    results: dict  # `goal_report` plus the policy's kind
    run: GoalEpisodes
    zero: GoalEpisodes
    imagined: ImaginedEpisodes | None


def imagined_episodes(policy: Policy, model, problems: Problems, store, goal_offset: int, seed: int = 0,
                      videos: int = 4) -> ImaginedEpisodes:  # fmt: skip
    """`policy` on `problems` inside `model` (`goal_reaching.run_imagined`), its noise from a generator seeded
    with `seed` on the policy's device."""
    device = module_device(policy)
    generator = torch.Generator(device).manual_seed(seed)

    def act(obs: dict) -> torch.Tensor:
        z_hist, z_goal = (torch.as_tensor(obs[k], device=device) for k in ("latents", "goal"))
        return act_block(policy, z_hist, z_goal, generator).flatten(1)

    return run_imagined(problems, model, store, act, policy.cfg.history, goal_offset, videos)


def evaluate_policy(policy: Policy, model, problems: Problems, store, goal_offset: int, imagined: bool = False,
                    seed: int = 0, stochastic: bool = False, videos: int = 4,
                    zero: GoalEpisodes | None = None) -> PolicyEvaluation:  # fmt: skip
    """The policy on `problems` (from held-out episodes of `store`); the zero-action baseline on the same problems
    (`zero`: its episodes from an earlier call on the same problems, not run again); with `imagined`, the same
    problems in `model`."""
    import time

    started = time.time()
    torch.manual_seed(seed)
    run = run_controller(problems, PolicyController(policy, model, seed=seed, stochastic=stochastic), "policy", videos)
    zero = zero if zero is not None else run_zero_actions(problems, model.spec.action_dim)
    dreamt = imagined_episodes(policy, model, problems, store, goal_offset, seed, videos) if imagined else None
    results = {"policy_kind": policy.cfg.kind, **goal_report(problems, run, zero, dreamt, started)}
    return PolicyEvaluation(results, run, zero, dreamt)
