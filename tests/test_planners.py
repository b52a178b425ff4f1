"""Every planner solves known problems, respects bounds, is seeded, warm-startable and batched (B, S, H, A)."""

import pytest
import torch

from planners.cem import CEM
from planners.icem import colored_filter, colored_noise
from planners.registry import PLANNERS, make_planner
from wm.errors import WMError

H, A = 4, 2
# DINO-WM's planner (Zhou et al. 2024, "DINO-WM: World Models on Pre-trained Visual Features enable Zero-shot
# Planning", arXiv:2411.04983): horizon 5, 300 samples, top 30, 30 iterations, init std 1 in normalised actions.
DINO_WM_PRESET = {"horizon": 5, "samples": 300, "elites": 30, "iterations": 30, "init_std": 1.0}
CONFIGS = {  # small budgets that solve the test problems in well under a second each
    "cem": {"samples": 200, "elites": 20, "iterations": 20},
    "icem": {"samples": 200, "elites": 20, "iterations": 20, "beta": 1.0},
    "mppi": {"samples": 300, "iterations": 30, "temperature": 0.01, "noise_std": 0.2},
    "cmaes": {"popsize": 32, "iterations": 40, "sigma0": 0.3},
    "gradient": {"restarts": 4, "iterations": 100, "lr": 0.1},
}
TOLERANCE = {"cem": 0.02, "icem": 0.03, "mppi": 0.1, "cmaes": 0.1, "gradient": 0.02}  # max |action error|
AT_BOUND = {**TOLERANCE, "gradient": 0.1}  # sigmoid(u) saturates: its gradient vanishes as it nears a bound
SAMPLE_BASED = ["cem", "icem", "mppi", "cmaes"]


def build(name: str, **overrides):
    return make_planner(name, **{"horizon": H, "action_dim": A, "seed": 0, **CONFIGS[name], **overrides})


def quadratic(target: torch.Tensor, calls: list | None = None):
    """Cost ||x - target[b]||^2 over (H, A); `target (B, H, A)`; records every queried batch in `calls`."""

    def cost(actions: torch.Tensor) -> torch.Tensor:
        if calls is not None:
            calls.append(actions.detach().clone())
        return ((actions - target[:, None]) ** 2).sum((2, 3))

    return cost


def targets(batch: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand((batch, H, A), generator=torch.Generator().manual_seed(seed)) * 1.6 - 0.8  # inside [-1, 1]


def test_registry_lists_every_planner_and_rejects_unknown_names():
    assert set(PLANNERS) == {"cem", "icem", "mppi", "cmaes", "gradient"}
    with pytest.raises(WMError, match="cem, icem, mppi, cmaes, gradient"):
        make_planner("random_shooting", horizon=H, action_dim=A)
    with pytest.raises(WMError, match="samples_per_iteration"):
        make_planner("cem", horizon=H, action_dim=A, samples_per_iteration=3)
    preset = CEM(action_dim=10, **DINO_WM_PRESET)  # DINO-WM's budget
    assert (preset.horizon, preset.samples, preset.elites, preset.iterations) == (5, 300, 30, 30)


def test_bad_configs_and_inputs_raise_one_line_errors():
    with pytest.raises(WMError, match="low < high"):
        CEM(horizon=H, action_dim=A, low=1.0, high=-1.0)
    with pytest.raises(WMError, match="2 values"):
        CEM(horizon=H, action_dim=A, low=[-1.0, -1.0, -1.0])
    with pytest.raises(WMError, match="elites <= samples"):
        CEM(horizon=H, action_dim=A, samples=10, elites=20)
    planner = build("cem")
    with pytest.raises(WMError, match="warm start has shape"):
        planner.plan(quadratic(targets()), 3, init=torch.zeros(3, H + 1, A))
    with pytest.raises(WMError, match=r"\(B, S\) costs"):
        planner.plan(lambda x: x.sum(-1), 3)


@pytest.mark.parametrize("name", PLANNERS)
def test_solves_batched_quadratic_with_different_targets(name):
    target = targets()
    planner = build(name)
    solution = planner.plan(quadratic(target), 3)
    assert solution.shape == (3, H, A)
    assert (solution - target).abs().max() < TOLERANCE[name]
    assert planner.last_costs.shape == (3,) and planner.last_cost_history.shape == (CONFIGS[name]["iterations"], 3)
    assert torch.allclose(planner.last_costs, quadratic(target)(solution[:, None])[:, 0])
    assert (planner.last_cost_history.diff(dim=0) <= 0).all()  # best-so-far never gets worse


@pytest.mark.parametrize("name", PLANNERS)
def test_solves_linear_dynamics_to_the_known_optimum(name):
    """x_{t+1} = x_t + a_t; cost ||x_H - goal||^2 + 0.5 sum ||a_t||^2; optimum a_t = (goal - x_0) / (H + 0.5)."""
    gen = torch.Generator().manual_seed(1)
    start, goal = torch.rand((3, A), generator=gen) - 0.5, torch.rand((3, A), generator=gen) * 3 - 1.5

    def cost(actions):  # (B, S, H, A) -> (B, S)
        final = start[:, None] + actions.sum(2)
        return ((final - goal[:, None]) ** 2).sum(-1) + 0.5 * (actions**2).sum((2, 3))

    optimum = ((goal - start) / (H + 0.5))[:, None].expand(3, H, A)
    solution = build(name).plan(cost, 3)
    assert (cost(solution[:, None]) - cost(optimum[:, None])).max() < 5e-3
    assert (solution - optimum).abs().max() < 2 * TOLERANCE[name]


@pytest.mark.parametrize("name", PLANNERS)
def test_bounds_hold_for_every_sample_and_targets_outside_end_on_the_bound(name):
    low, high = torch.tensor([-1.0, -0.5]), torch.tensor([1.0, 0.5])
    target = torch.tensor([2.0, -3.0]).expand(2, H, A)  # beyond high in dim 0, below low in dim 1
    calls = []
    solution = build(name, low=low.tolist(), high=high.tolist()).plan(quadratic(target, calls), 2)
    for actions in [*calls, solution]:
        assert (actions >= low).all() and (actions <= high).all()
    assert (solution - torch.tensor([1.0, -0.5])).abs().max() < AT_BOUND[name]


@pytest.mark.parametrize("name", PLANNERS)
def test_same_seed_gives_the_same_plan(name):
    first, second = (build(name, seed=7).plan(quadratic(targets()), 3) for _ in range(2))
    assert torch.equal(first, second)


@pytest.mark.parametrize("name", PLANNERS)
def test_warm_start_at_the_optimum_is_returned(name):
    target = targets()
    solution = build(name).plan(quadratic(target), 3, init=target)
    assert torch.allclose(solution, target, atol=1e-5)


@pytest.mark.parametrize("name", PLANNERS)
def test_shifted_previous_solution_gives_a_lower_initial_cost(name):
    target = targets()[:, :1].expand(3, H, A)  # constant over time: shifting the optimum keeps it optimal
    planner = build(name)
    previous = planner.plan(quadratic(target), 3)
    planner.plan(quadratic(target), 3, init=planner.shift(previous))
    warm = planner.last_cost_history[0]
    planner.plan(quadratic(target), 3)
    assert (warm < planner.last_cost_history[0]).all()


def test_shift_drops_the_first_step_and_repeats_the_last():
    solution = torch.arange(H, dtype=torch.float32)[None, :, None].expand(1, H, A)
    assert build("cem").shift(solution)[0, :, 0].tolist() == [1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize("name", PLANNERS)
def test_answer_does_not_depend_on_the_other_problems_in_the_batch(name):
    target = targets()
    together = build(name).plan(quadratic(target), 3)[1]
    alone = build(name).plan(quadratic(target[1:2]), 1)[0]
    cost = quadratic(target[1:2])
    assert abs(cost(together[None, None]) - cost(alone[None, None])).item() < TOLERANCE[name] ** 2


@pytest.mark.parametrize("name", PLANNERS)
def test_cost_fn_is_called_once_per_iteration_with_the_whole_population(name):
    calls = []
    build(name).plan(quadratic(targets(), calls), 3)
    assert len(calls) == CONFIGS[name]["iterations"]
    assert all(c.ndim == 4 and c.shape[0] == 3 and c.shape[2:] == (H, A) for c in calls)
    sizes = [c.shape[1] for c in calls]
    if name == "icem":  # shrinking population; the last call adds the kept elites and the mean to the minimum
        assert sizes[0] == 200 and sizes[1:-1] == sorted(sizes[1:-1], reverse=True) and sizes[-1] == 40 + 6 + 1
    else:  # CMA-ES's first call also scores the warm start
        expected = {"cem": [200] * 20, "mppi": [300] * 30, "cmaes": [33] + [32] * 39, "gradient": [4] * 100}
        assert sizes == expected[name]


def test_icem_brings_back_its_shifted_elites_only_with_a_warm_start():
    calls = []
    planner = build("icem", samples=100, elites=10, iterations=2)
    previous = planner.plan(quadratic(targets(), calls), 3)
    planner.plan(quadratic(targets(), calls), 3, init=planner.shift(previous))
    planner.plan(quadratic(targets(), calls), 3)
    assert [c.shape[1] for c in calls[::2]] == [100, 100 + 3 + 1, 100]  # + 3 kept elites + the warm start


def test_colored_noise_has_unit_variance_and_is_smooth_along_the_horizon():
    for beta, smooth in ((0.0, False), (2.5, True)):
        noise = colored_noise((2, 20000, 6, 3), colored_filter(6, beta), torch.Generator().manual_seed(0))
        assert torch.allclose(noise.var(dim=(0, 1)), torch.ones(6, 3), atol=0.05)
        lag1 = (noise[:, :, 1:] * noise[:, :, :-1]).mean()
        assert lag1 > 0.5 if smooth else abs(lag1) < 0.02


@pytest.mark.parametrize("name", ["cem", "icem", "mppi"])
def test_torch_planners_never_sync_with_the_host(name, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("host sync inside plan()")

    planner, cost = build(name, iterations=3), quadratic(targets())
    with monkeypatch.context() as patch:
        for method in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__"):
            patch.setattr(torch.Tensor, method, forbidden)
        planner.plan(cost, 3)


def test_gradient_planner_works_under_no_grad_and_leaves_model_weights_alone():
    weight = torch.nn.Parameter(torch.ones(A))
    target = targets()
    with torch.no_grad():
        solution = build("gradient").plan(lambda x: (((x - target[:, None]) * weight) ** 2).sum((2, 3)), 3)
    assert (solution - target).abs().max() < TOLERANCE["gradient"] and weight.grad is None
    with pytest.raises(WMError, match="not differentiable"):
        build("gradient").plan(lambda x: quadratic(target)(x.detach()), 3)
