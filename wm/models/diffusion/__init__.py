"""The pixel-space diffusion world model (DIAMOND / World4RL): EDM, action encodings, the UNet denoiser, a success
head, and the world model that ties them to the engine's contract."""
