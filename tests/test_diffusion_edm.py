"""EDM parts of the diffusion world model: preconditioning identities, the weighted loss, the Karras schedule, the
Euler/Heun sampler (exact with an oracle network, step-for-step equal to diffusers' EDMEulerScheduler), the two-hot
action code, and SSIM."""

import pytest
import torch
from diffusers import EDMEulerScheduler

from wm.evaluation.metrics import ssim
from wm.models.diffusion.action_encoding import two_hot
from wm.models.diffusion.edm import EDM

SIGMAS = torch.tensor([2e-3, 0.1, 0.5, 1.0, 5.0, 80.0])


def toy_net(x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
    """A fixed nonlinear stand-in for the UNet."""
    return torch.tanh(1.3 * x_in + c_noise.view(-1, 1, 1, 1)) - 0.2 * x_in.roll(1, dims=-1)


def test_preconditioning_identities():
    edm = EDM(sigma_data=0.5)
    c_skip, c_out, c_in, c_noise = edm.scalings(SIGMAS)
    total = SIGMAS**2 + 0.25
    assert torch.allclose(c_in**2 * total, torch.ones(6))  # unit-variance network input
    assert torch.allclose(c_out**2, SIGMAS**2 * c_skip)  # c_out^2 = sigma^2 c_skip
    assert torch.allclose(c_skip + c_out**2 / 0.25, torch.ones(6))  # target variance normalisation
    assert torch.allclose(edm.loss_weight(SIGMAS) * c_out**2, torch.ones(6))
    assert torch.allclose(c_noise, SIGMAS.log() / 4)
    assert c_skip[0] > 0.99 and c_skip[-1] < 1e-3  # low noise: keep the input; high noise: predict from scratch


def test_loss_is_the_weighted_denoising_error_and_zero_for_an_oracle():
    edm = EDM()
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(6, 3, 4, 4, generator=gen), torch.randn(6, 3, 4, 4, generator=gen)
    per_sample, denoised = edm.loss(toy_net, x0, SIGMAS, noise)
    weighted = edm.loss_weight(SIGMAS) * ((denoised - x0) ** 2).flatten(1).mean(1)
    assert torch.allclose(per_sample, weighted, rtol=1e-4)

    def oracle(x_in, c_noise):  # returns exactly the EDM target for x0
        sigma = (4 * c_noise).exp()
        c_skip, c_out, c_in, _ = (c.view(-1, 1, 1, 1) for c in edm.scalings(sigma))
        return (x0[: len(x_in)] - c_skip * x_in / c_in) / c_out

    per_sample, denoised = edm.loss(oracle, x0, SIGMAS, noise)
    assert per_sample.max() < 1e-6 and torch.allclose(denoised, x0, atol=1e-4)
    sigmas = edm.training_sigmas(20000, generator=gen)
    assert abs(sigmas.log().mean() + 0.4) < 0.05 and abs(sigmas.log().std() - 1.2) < 0.05


def test_karras_schedule_runs_from_sigma_max_to_sigma_min_then_zero():
    edm = EDM(sigma_min=2e-3, sigma_max=5.0, rho=7.0)
    sigmas = edm.sigmas(3)
    assert sigmas.shape == (4,) and sigmas[-1] == 0
    assert torch.allclose(sigmas[:3], torch.tensor([5.0, 0.2829, 2e-3]), rtol=1e-3)
    assert torch.all(sigmas[1:] < sigmas[:-1])


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_sampler_recovers_the_clean_sample_with_an_oracle_denoiser(method):
    edm = EDM()
    x0 = torch.rand(2, 3, 8, 8) * 2 - 1

    def oracle(x_in, c_noise):
        sigma = (4 * c_noise).exp()
        c_skip, c_out, c_in, _ = (c.view(-1, 1, 1, 1) for c in edm.scalings(sigma))
        return (x0 - c_skip * x_in / c_in) / c_out

    out = edm.sample(oracle, torch.randn(2, 3, 8, 8), steps=3, method=method)
    assert out.shape == x0.shape and torch.allclose(out, x0, atol=1e-4)


def test_euler_sampler_matches_diffusers_edm_euler_scheduler_step_for_step():
    edm = EDM(sigma_min=2e-3, sigma_max=5.0, sigma_data=0.5, rho=7.0)
    noise = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    ours = edm.sample(toy_net, noise, steps=3)
    scheduler = EDMEulerScheduler(sigma_min=2e-3, sigma_max=5.0, sigma_data=0.5, rho=7.0, final_sigmas_type="zero")
    scheduler.set_timesteps(3)
    x = noise * scheduler.sigmas[0]
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, t)
        x = scheduler.step(toy_net(x_in, t.expand(len(x))), t, x).prev_sample
    assert torch.allclose(ours, x, atol=1e-5)


def test_two_hot_spreads_each_value_over_its_two_nearest_bins():
    low, high = torch.tensor([-1.0, -1.0]), torch.tensor([1.0, 1.0])
    x = torch.tensor([[-1.0, 0.03], [0.5, 1.0], [2.0, -0.96]], requires_grad=True)
    code = two_hot(x, low, high, bins=21)  # (3, 2, 21)
    assert torch.allclose(code.sum(-1), torch.ones(3, 2))
    assert int((code > 0).sum(-1).max()) <= 2
    centres = torch.linspace(-1, 1, 21)
    assert torch.allclose((code * centres).sum(-1), x.detach().clamp(-1, 1), atol=1e-6)  # decodes back
    (code * torch.randn(21)).sum().backward()
    assert x.grad[0, 1] != 0  # piecewise linear: continuous actions get a gradient


def test_ssim_is_one_for_identical_images_and_drops_with_noise():
    a = torch.rand(2, 32, 32, 3)
    assert torch.allclose(ssim(a, a), torch.ones(2), atol=1e-5)
    noisy = (a + 0.1 * torch.randn_like(a)).clamp(0, 1)
    very_noisy = (a + 0.3 * torch.randn_like(a)).clamp(0, 1)
    assert torch.all(ssim(a, very_noisy) < ssim(a, noisy)) and torch.all(ssim(a, noisy) < 0.99)
