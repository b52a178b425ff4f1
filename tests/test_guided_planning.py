"""Policy-guided planning: proposals join a population planner's search (`planners.base`), and a cloned policy's
rollouts in the world model are the proposals (`policies.guide`, `wm plan --guide`)."""

from __future__ import annotations

import json

import pytest
import torch

from planners.cem import CEM
from planners.cmaes import CMAES
from planners.icem import ICEM
from planners.mppi import MPPI
from policies.guide import PolicyGuide
from wm.errors import WMError

B, P, H, A = 3, 4, 5, 2


def quadratic_to(target: torch.Tensor):
    """Cost of `(B, S, H, A)` actions: squared distance to `target (B, H, A)`; counts the sequences it scores."""
    calls = {"scored": 0}

    def cost(actions):
        calls["scored"] += actions.shape[1]
        return ((actions - target[:, None]) ** 2).sum((-2, -1))

    return cost, calls


@pytest.mark.parametrize("planner", [CEM, ICEM, MPPI])
def test_a_proposal_at_the_optimum_is_kept_and_scored_once(planner):
    target = torch.rand(B, H, A) * 1.6 - 0.8  # inside the bounds, far from the midpoint the search starts from
    proposals = torch.rand(B, P, H, A) * 2 - 1
    proposals[:, 2] = target  # one proposal is the optimum
    cost, calls = quadratic_to(target)
    p = planner(horizon=H, action_dim=A, samples=20, iterations=3, seed=0, **({"elites": 4} if planner != MPPI else {}))
    plan = p.plan(cost, B, proposals=proposals)
    assert torch.allclose(plan, target)  # no 20-sample search finds the exact optimum: only the proposal is it
    unguided = p.plan(cost, B)
    assert bool((cost(unguided[:, None]) > 1e-6).all())
    calls["scored"] = 0
    p.plan(cost, B, proposals=proposals)
    own = calls["scored"] - P
    calls["scored"] = 0
    p.plan(cost, B)
    assert own == calls["scored"]  # the proposals were scored once, beside the planner's own population


def test_the_search_starts_from_the_first_proposal_and_the_warm_start_stays_a_candidate():
    warm = torch.full((B, H, A), 0.5)
    cost, _ = quadratic_to(warm)
    proposals = torch.full((B, P, H, A), -0.9)
    cem = CEM(horizon=H, action_dim=A, samples=8, elites=2, iterations=1, init_std=1e-6, seed=0)
    plan = cem.plan(cost, B, init=warm, proposals=proposals)
    assert torch.allclose(plan, warm)  # the warm start (best) was scored although the search began at -0.9
    cost_far, _ = quadratic_to(torch.full((B, H, A), -0.9))
    cem.plan(cost_far, B, init=warm, proposals=proposals)
    assert float(cem.last_costs.max()) < 1e-6


def test_planners_without_a_population_refuse_proposals_and_bad_shapes_are_named():
    cost, _ = quadratic_to(torch.zeros(B, H, A))
    with pytest.raises(WMError, match="takes no proposals"):
        CMAES(horizon=H, action_dim=A, popsize=8, iterations=1).plan(cost, B, proposals=torch.zeros(B, P, H, A))
    with pytest.raises(WMError, match=r"expected \(B, P, H, A\)"):
        CEM(horizon=H, action_dim=A, samples=8, elites=2, iterations=1).plan(cost, B, proposals=torch.zeros(B, H, A))


def test_the_guide_rolls_the_policy_out_in_the_model(jepa, cloned):
    from policies.checkpoint import load_policy
    from policies.controller import act_block

    policy, _, model, _ = load_policy(cloned, str(jepa[2]))
    spec = model.spec
    z_hist = torch.randn(2, spec.num_hist, spec.tokens, spec.latent_dim)
    past = torch.zeros(2, spec.num_hist - 1, spec.block_action_dim)
    z_goal = torch.randn(2, spec.tokens, spec.latent_dim)
    guide = PolicyGuide(policy, model, samples=3, seed=0)
    plans = guide.propose(z_hist, past, z_goal, horizon=4, hold_in_block=False)
    assert plans.shape == (2, 3, 4, spec.block_action_dim)
    # proposal 0 is the policy's own (mean) choice: its first block is what the policy does from this history
    first = act_block(policy, z_hist[:, -policy.cfg.history :], z_goal, torch.Generator().manual_seed(0))
    assert torch.allclose(plans[:, 0, 0], first.flatten(1), atol=1e-5)
    assert not torch.allclose(plans[:, 1], plans[:, 2])  # the others sample the policy's noise
    held = guide.propose(z_hist, past, z_goal, horizon=4, hold_in_block=True)
    assert held.shape == (2, 3, 4, spec.action_dim)


def test_wm_plan_with_a_guide_writes_its_settings(maze, jepa, cloned, tmp_path):
    from wm.app.cli import main

    out = tmp_path / "guided"
    argv = ["plan", "--checkpoint", str(jepa[2]), "--env", "wm/PointMaze-v0", "--data", str(maze), "--episodes", "2",
            "--budget", "10", "--samples", "16", "--iterations", "2", "--horizon", "3",
            "--device", "cpu", "--out", str(out), "--guide", str(cloned), "--guide-samples", "4"]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["guide"] == str(cloned) and results["config"]["guide_samples"] == 4
    assert main([*argv[:-6], "--out", str(tmp_path / "cma"), "--planner", "cmaes", "--guide", str(cloned)]) == 2
    assert not (tmp_path / "cma").exists()


def test_plan_and_eval_policy_draw_the_same_pairs_from_one_store_and_seed(maze, jepa, cloned, tmp_path):
    """Issue 28 item 12: before, `wm eval-policy` started its pairs a model history into the episodes and `wm plan`
    did not, so MPC and a policy were judged on different pairs (1 of 50 shared)."""
    from wm.app.cli import main

    common = ["--env", "wm/PointMaze-v0", "--data", str(maze), "--episodes", "4", "--budget", "5", "--seed", "3",
              "--device", "cpu"]  # fmt: skip
    assert main(["plan", "--checkpoint", str(jepa[2]), *common, "--samples", "8", "--iterations", "1", "--horizon",
                 "2", "--out", str(tmp_path / "plan")]) == 0  # fmt: skip
    assert main(["eval-policy", "--policy", str(cloned), *common, "--out", str(tmp_path / "policy")]) == 0
    pairs = [
        [(e["episode"], e["t"]) for e in json.loads((tmp_path / run / "results.json").read_text())["per_episode"]]
        for run in ("plan", "policy")
    ]
    assert pairs[0] == pairs[1] and len(pairs[0]) == 4


def test_a_preset_guide_is_relative_to_its_checkpoint_and_none_turns_it_off(tmp_path):
    from planners.mpc import MPCConfig, with_preset
    from policies.guide import load_guide
    from wm.models.checkpoint_config import CheckpointConfig

    raw = {"model": {"kind": "jepa"}, "plan": {"planner": "icem", "guide": "../bc-arm"}}
    config = CheckpointConfig.parse(raw, tmp_path / "jepa-arm")
    assert config.plan_preset["guide"] == str(tmp_path / "jepa-arm" / "../bc-arm")
    given = {f: None for f in MPCConfig.__dataclass_fields__}
    assert with_preset(MPCConfig(**given), config.plan_preset).guide == config.plan_preset["guide"]
    off = with_preset(MPCConfig(**{**given, "guide": "none"}), config.plan_preset)
    assert off.guide == "none" and load_guide(off.guide, tmp_path, model=None) is None
