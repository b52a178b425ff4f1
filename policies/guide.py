"""Policy-guided planning: a goal-conditioned policy proposes action sequences that join the planner's search.

As TD-MPC2 mixes policy trajectories into MPPI: from the same latent history the MPC plans from, the policy acts
block by block inside the world model (`start_imagination` / `imagine_step`) for the planner's horizon, `samples`
times per problem. Proposal 0 is the policy's own choice (its mean; a diffusion policy's zero noise), the others
act from fresh standard-normal noise (`policies.protocol`). The planner starts its search from proposal 0 and
scores every proposal beside its first population (`planners.base.PlannerBase.plan`), so the plan is never worse,
by the model's cost, than what the policy alone would do. `PolicyGuide` meets `planners.mpc.Guide`; `load_guide`
makes one from a policy checkpoint (`wm plan --guide`, a checkpoint's preset).
"""

from __future__ import annotations

import torch

from policies.protocol import Policy
from wm.errors import WMError


class PolicyGuide:
    """`propose(z_hist (B, T, N, D), past_actions (B, T-1, fs*A) or None, z_goal (B, N, D), horizon, hold_in_block)
    -> (B, samples, H, fs*A or A)`: the policy's rollouts in `model` as planner action sequences."""

    def __init__(self, policy: Policy, model, samples: int = 16, seed: int = 0):
        if samples < 1:
            raise WMError(f"--guide-samples must be at least 1, got {samples}")
        if policy.cfg.frameskip != model.spec.frameskip or policy.cfg.action_dim != model.spec.action_dim:
            raise WMError("the guide policy acts in other blocks than the world model plans in; pass a policy "
                          "cloned on this world model (`wm bc --world-model CHECKPOINT`)")  # fmt: skip
        self.policy, self.model, self.samples, self.seed = policy, model, samples, seed
        self.generator: torch.Generator | None = None

    @torch.no_grad()
    def propose(self, z_hist, past_actions, z_goal, horizon: int, hold_in_block: bool) -> torch.Tensor:
        b, p, cfg = z_hist.shape[0], self.samples, self.policy.cfg
        if self.generator is None or self.generator.device != z_hist.device:
            self.generator = torch.Generator(z_hist.device).manual_seed(self.seed)
        rows = lambda x: None if x is None else x.repeat_interleave(p, 0)  # noqa: E731  (B, ...) -> (B*P, ...)
        frames, goal = list(rows(z_hist).unbind(1)), rows(z_goal)
        state = self.model.start_imagination(rows(z_hist), rows(past_actions))
        noise_dim = cfg.frameskip * cfg.action_dim
        own_choice = (torch.arange(b * p, device=z_hist.device) % p == 0)[:, None]  # proposal 0 of each problem
        blocks = []
        for _ in range(horizon):
            noise = torch.randn((b * p, noise_dim), generator=self.generator, device=z_hist.device)
            noise = torch.where(own_choice, torch.zeros_like(noise), noise)  # a Gaussian's mean, a diffusion's 0
            history = torch.stack(frames[-cfg.history :], dim=1)
            if history.shape[1] < cfg.history:  # the first frame repeated, as `PolicyController` does
                history = torch.cat([history[:, :1].expand(-1, cfg.history - history.shape[1], -1, -1), history], 1)
            block = self.policy.act(history, goal, noise)  # (B*P, fs, A)
            blocks.append(block)
            frames.append(self.model.imagine_step(state, block.flatten(1)))
        plan = torch.stack(blocks, dim=1)  # (B*P, H, fs, A)
        plan = plan.mean(2) if hold_in_block else plan.flatten(2)
        return plan.reshape(b, p, horizon, -1)


def load_guide(path, checkpoint, model, samples: int = 16, seed: int = 0) -> PolicyGuide | None:
    """The policy checkpoint `path` (`MPCConfig.guide`) as a guide for `model`, the world model at `checkpoint`: the
    policy must read its latents (checked by the hash its config records). None for no guide (None or "none")."""
    if path in (None, "none"):
        return None
    from policies.checkpoint import load_policy
    from wm.device import module_device

    policy, _, _, _ = load_policy(path, str(checkpoint), module_device(model))
    return PolicyGuide(policy, model, samples, seed=seed)
