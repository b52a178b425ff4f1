"""The block-causal latent predictor: causality, window, KV-cached rollout, action conditioning."""

import pytest
import torch

from wm.errors import WMError
from wm.models.attention import FrameKVCache, attend
from wm.models.predictor import BlockCausalPredictor, PredictorConfig

D, N, A, NUM_HIST = 16, 4, 6, 3
MODES = ["concat", "adaln"]


def make_model(conditioning: str, depth: int = 2, seed: int = 0, num_hist: int = NUM_HIST) -> BlockCausalPredictor:
    """Small eval-mode predictor; adaln modulation is randomised so that actions matter (it is zero at init)."""
    torch.manual_seed(seed)
    cfg = PredictorConfig(D, N, A, num_hist=num_hist, dim=32, depth=depth, heads=4, conditioning=conditioning)
    model = BlockCausalPredictor(cfg).eval()
    if conditioning == "adaln":
        for block in model.blocks:
            torch.nn.init.normal_(block.modulation[1].weight, std=0.1)
    return model


def inputs(batch: int, frames: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, N, D, generator=g), torch.randn(batch, frames, A, generator=g)


def frame_change(model: BlockCausalPredictor, z: torch.Tensor, a: torch.Tensor, frame: int) -> torch.Tensor:
    """Max abs change of each output frame `(T,)` when input frame `frame` (latent and action) is perturbed."""
    z2, a2 = z.clone(), a.clone()
    z2[:, frame] += 1.0
    a2[:, frame] += 1.0
    with torch.no_grad():
        return (model(z2, a2) - model(z, a)).abs().amax(dim=(0, 2, 3))


@pytest.mark.parametrize("conditioning", MODES)
def test_forward_and_rollout_shapes(conditioning):
    model = make_model(conditioning)
    z, a = inputs(2, 5)
    assert model(z, a).shape == (2, 5, N, D)
    assert model.rollout(z, torch.randn(2, 7, 4, A)).shape == (2, 7, 4, N, D)
    assert model.rollout(z, torch.randn(2, 4, A)).shape == (2, 4, N, D)
    assert model.rollout(z[:, :1], torch.randn(2, 3, 2, A), use_cache=False).shape == (2, 3, 2, N, D)


@pytest.mark.parametrize("conditioning", MODES)
def test_outputs_never_see_future_frames(conditioning):
    model = make_model(conditioning)
    z, a = inputs(2, NUM_HIST)
    for t in range(NUM_HIST - 1):
        change = frame_change(model, z, a, t + 1)
        assert change[: t + 1].max() == 0.0, f"frame {t + 1} leaked into outputs <= {t}"
        assert frame_change(model, z, a, t)[t] > 1e-3, f"frame {t} does not affect its own output"


@pytest.mark.parametrize("conditioning", MODES)
def test_one_layer_attends_only_to_last_num_hist_frames(conditioning):
    model = make_model(conditioning, depth=1)
    z, a = inputs(2, 6)
    t = 5
    assert frame_change(model, z, a, t - NUM_HIST)[t] == 0.0
    assert frame_change(model, z, a, t - NUM_HIST + 1)[t] > 1e-3


@pytest.mark.parametrize("conditioning", MODES)
def test_receptive_field_is_the_window_stacked_per_layer(conditioning):
    depth = 2
    model = make_model(conditioning, depth=depth)
    z, a = inputs(2, 7)
    reach = (NUM_HIST - 1) * depth  # farthest frame offset that can influence an output
    t = 6
    assert frame_change(model, z, a, t - reach - 1)[t] == 0.0
    assert frame_change(model, z, a, t - reach)[t] > 1e-6


@pytest.mark.parametrize("conditioning", MODES)
@pytest.mark.parametrize("history", [1, 2, NUM_HIST, NUM_HIST + 2])
def test_cached_rollout_matches_recomputed_rollout(conditioning, history):
    model = make_model(conditioning)
    z, past = inputs(2, history)
    actions = torch.randn(2, 5, NUM_HIST + 3, A)
    cached = model.rollout(z, actions, past[:, :-1])
    recomputed = model.rollout(z, actions, past[:, :-1], use_cache=False)
    assert (cached - recomputed).abs().max() < 1e-4


@pytest.mark.parametrize("conditioning", MODES)
def test_rollout_of_samples_equals_separate_rollouts(conditioning):
    model = make_model(conditioning)
    z, past = inputs(2, NUM_HIST)
    actions = torch.randn(2, 4, 5, A)
    together = model.rollout(z, actions, past[:, :-1])
    for s in range(4):
        alone = model.rollout(z, actions[:, s], past[:, :-1])
        assert (together[:, s] - alone).abs().max() < 1e-5


@pytest.mark.parametrize("conditioning", MODES)
def test_rollout_matches_teacher_forcing_on_imagined_frames(conditioning):
    model = make_model(conditioning)
    z, past = inputs(2, NUM_HIST)
    actions = torch.randn(2, 5, A)
    with torch.no_grad():
        pred = model.rollout(z, actions, past[:, :-1])
        seq = torch.cat([z, pred[:, :-1]], dim=1)  # history then imagined frames, each input to the next step
        forced = model(seq, torch.cat([past[:, :-1], actions], dim=1))[:, NUM_HIST - 1 :]
        first = model(z, torch.cat([past[:, :-1], actions[:, :1]], dim=1))[:, -1]
    assert (forced - pred).abs().max() < 1e-4
    assert (first - pred[:, 0]).abs().max() < 1e-5


@pytest.mark.parametrize("conditioning", MODES)
def test_only_last_num_hist_history_frames_matter(conditioning):
    model = make_model(conditioning)
    z, past = inputs(2, NUM_HIST + 2)
    actions = torch.randn(2, 3, 4, A)
    z2, past2 = z.clone(), past.clone()
    z2[:, :2] += 5.0
    past2[:, :2] += 5.0
    full = model.rollout(z, actions, past[:, :-1])
    assert (model.rollout(z2, actions, past2[:, :-1]) - full).abs().max() == 0.0
    assert (model.rollout(z[:, -NUM_HIST:], actions, past[:, -NUM_HIST:-1]) - full).abs().max() == 0.0


@pytest.mark.parametrize("conditioning", MODES)
def test_gradients_reach_actions_through_cached_rollout(conditioning):
    model = make_model(conditioning)
    z, past = inputs(2, NUM_HIST)
    actions = torch.randn(2, 3, 5, A, requires_grad=True)
    grads = []
    for use_cache in (True, False):
        pred = model.rollout(z, actions, past[:, :-1], use_cache=use_cache)
        grads.append(torch.autograd.grad(pred[:, :, -1].square().sum(), actions)[0])
    assert grads[0].abs().amax(dim=(0, 1, 3)).min() > 0, "some step's action gets no gradient"
    assert (grads[0] - grads[1]).abs().max() < 1e-4


def test_rollout_follows_callers_grad_mode():
    model = make_model("concat")
    z, _ = inputs(1, NUM_HIST)
    actions = torch.randn(1, 2, 3, A, requires_grad=True)
    with torch.no_grad():
        assert not model.rollout(z, actions).requires_grad
    assert model.rollout(z, actions).requires_grad


def test_adaln_starts_as_identity_blocks_that_ignore_actions():
    cfg = PredictorConfig(D, N, A, dim=32, depth=2, heads=4, conditioning="adaln")
    model = BlockCausalPredictor(cfg).eval()
    z, a = inputs(2, NUM_HIST)
    with torch.no_grad():
        assert (model(z, a) - model(z, a + 3.0)).abs().max() == 0.0
        assert (model(z, a) - model.head(model.norm(model.input_proj(z) + model.spatial_pos))).abs().max() < 1e-6


@pytest.mark.parametrize("conditioning", MODES)
def test_training_learns_action_dependent_dynamics(conditioning):
    """Fresh model (adaln zero-init) fit to z_{t+1} = z_t + a_t @ W: loss falls and actions change predictions."""
    torch.manual_seed(0)
    cfg = PredictorConfig(D, N, A, dim=32, depth=2, heads=4, dropout=0.0, conditioning=conditioning)
    model = BlockCausalPredictor(cfg)
    effect = torch.randn(A, D)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        z0, a = torch.randn(16, 1, N, D), torch.randn(16, NUM_HIST, A)
        z = torch.cat([z0, z0 + torch.cumsum(a @ effect, dim=1)[:, :, None]], dim=1)
        loss = (model(z[:, :-1], a) - z[:, 1:]).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])
    model.eval()
    z, a = inputs(4, NUM_HIST)
    with torch.no_grad():
        assert (model.rollout(z, a, a[:, :-1] + 1.0) - model.rollout(z, a, a[:, :-1])).abs().max() > 1e-2
        assert (model.rollout(z, a + 1.0, a[:, :-1]) - model.rollout(z, a, a[:, :-1])).abs().mean() > 0.1


def test_cache_stores_shared_history_once_and_keeps_a_window():
    cache = FrameKVCache(depth=1, num_hist=3, tokens_per_frame=2, samples=5)
    shared = torch.randn(2, 4, 2 * 2, 8)  # B=2 problems, 2 history frames of 2 tokens
    k, _ = cache.update(0, shared, shared)
    assert k is shared
    assert [e[0].shape[0] for e in cache.frames[0]] == [2, 2]
    new = torch.randn(10, 4, 2, 8)  # B*S = 10 per-sample rows, one frame
    k, _ = cache.update(0, new, new)
    assert k.shape == (10, 4, 6, 8)
    assert torch.equal(k[7, :, :4], shared[1]) and torch.equal(k[7, :, 4:], new[7])
    assert [e[0].shape[0] for e in cache.frames[0]] == [2, 10]  # oldest history frame evicted


@pytest.mark.parametrize("num_hist", [1, 2, 3, 4])
@pytest.mark.parametrize("advance", [True, False])
def test_restarts_that_advance_or_hold_imagine_what_a_fresh_rollout_does(num_hist, advance):
    """Rows restarted mid-rollout (row 3 twice, the second start winning) imagine what a fresh rollout from their
    start does; a restart that holds returns its start frame at the next step and advances from the step after;
    the other rows go on undisturbed."""
    model = make_model("adaln", num_hist=num_hist)
    z, past = inputs(5, num_hist)
    acts = torch.randn(5, 7, A)
    z_new, past_new = inputs(2, num_hist, seed=2)
    with torch.no_grad():
        state = model.start(z, past[:, : num_hist - 1])
        steps = [model.step(state, acts[:, 0])]
        model.restart(state, torch.tensor([3]), *inputs(1, num_hist, seed=3)[:1], past[:1, : num_hist - 1], advance)
        model.restart(state, torch.tensor([1, 3]), z_new, past_new[:, : num_hist - 1], advance)
        steps += [model.step(state, acts[:, i]) for i in range(1, 7)]
        steps = torch.stack(steps, 1)  # (5, 7, N, D)
        first = 1 if advance else 2  # the first action the restarted rows act on
        fresh = model.rollout(z_new, acts[[1, 3], first:], past_actions=past_new[:, : num_hist - 1])
        going_on = model.rollout(z[[0, 2, 4]], acts[[0, 2, 4]], past_actions=past[[0, 2, 4], : num_hist - 1])
    torch.testing.assert_close(steps[[1, 3], first:], fresh, atol=1e-5, rtol=1e-4)
    if not advance:
        torch.testing.assert_close(steps[[1, 3], 1], z_new[:, -1])
    torch.testing.assert_close(steps[[0, 2, 4]], going_on, atol=1e-5, rtol=1e-4)
    if num_hist > 1:  # (with one frame of history nothing waits for the step)
        model.restart(state, torch.tensor([0]), z_new[:1], past_new[:1, : num_hist - 1], advance)
        with pytest.raises(WMError, match="cannot wait for the same step"):
            model.restart(state, torch.tensor([2]), z_new[:1], past_new[:1, : num_hist - 1], not advance)


def test_bad_config_and_shapes_raise_wm_error():
    with pytest.raises(WMError):
        PredictorConfig(D, N, A, conditioning="film")
    with pytest.raises(WMError):
        PredictorConfig(D, N, A, dim=30, heads=4)
    model = make_model("concat")
    z, a = inputs(2, NUM_HIST)
    with pytest.raises(WMError):
        model(z, a[:, :-1])
    with pytest.raises(WMError):
        model.rollout(z, torch.randn(2, 3, A + 1))
    with pytest.raises(WMError):
        model.rollout(z, torch.randn(2, 3, A), past_actions=a[:, :1])


@pytest.mark.parametrize("queries,keys", [(1, 3), (16, 48), (80, 80)])  # the last goes to the fused kernel
def test_attend_matches_torch_attention_with_and_without_a_mask(queries, keys):
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, n, 8, dtype=torch.float64) for n in (queries, keys, keys))
    mask = torch.rand(3, 1, queries, keys) > 0.4
    mask[..., 0] = True  # every query sees at least one key
    for m in (None, mask):
        expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=m)
        torch.testing.assert_close(attend(q, k, v, m), expected)
