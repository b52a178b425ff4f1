"""wm-engine: world models, their data, and the CLI that wires the engine together.

Kept import-light on purpose: `import wm.errors` (used by `envs` and `planners`) must not pull in torch.
"""

__version__ = "0.1.0"
