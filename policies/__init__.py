"""Learned controllers on world-model latents: goal-conditioned policies (Gaussian, diffusion) learned offline from
demonstrations, the controllers that run them in envs and on robots, and (next) their refinement in imagination.
A policy reads latents, so the same policy runs in `wm.imagine.ImaginedVectorEnv`, in a real env and on a robot."""
