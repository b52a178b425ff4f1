"""The policy kinds, in one place: a kind's name maps to its class, whether `wm bc` can clone it from
demonstrations, and which refinement algorithm (`wm refine --algo`) starts from it. Everything that depends on a
policy's kind asks this table; nothing else branches on kinds.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from policies.diffusion import DiffusionPolicy
from policies.gaussian import GaussianPolicy
from policies.protocol import PolicyConfig
from policies.steered import SteeredPolicy
from wm.errors import WMError


@dataclass(frozen=True)
class PolicyKind:
    name: str
    cls: type
    summary: str
    cloned: bool  # `wm bc` learns it from demonstrations
    refined_by: str | None = None  # the `wm refine --algo` that starts from a policy of this kind
    needs_base: bool = False  # built around a frozen base policy (its config's `base`)


POLICIES: dict[str, PolicyKind] = {
    kind.name: kind
    for kind in (
        PolicyKind("gaussian", GaussianPolicy, "Gaussian over a block, state-independent std", True, "ppo"),
        PolicyKind("diffusion", DiffusionPolicy, "DDPM-trained, DDIM-sampled action blocks", True, "dsrl"),
        PolicyKind(
            "steered",
            SteeredPolicy,
            "a diffusion policy steered through its initial noise (DSRL)",
            False,
            needs_base=True,
        ),  # fmt: skip
    )
}
CLONED = tuple(name for name, kind in POLICIES.items() if kind.cloned)  # `wm bc --policy` choices
REFINED = {kind.refined_by: name for name, kind in POLICIES.items() if kind.refined_by}  # algo -> kind it refines


def policy_kind(name: str) -> PolicyKind:
    if name not in POLICIES:
        raise WMError(f"unknown policy kind {name!r}; use one of {', '.join(POLICIES)}")
    return POLICIES[name]


def build_policy(cfg: dict) -> nn.Module:
    """The policy a config dict describes (its `kind` names the class)."""
    policy_cfg = PolicyConfig(**cfg)
    kind = policy_kind(policy_cfg.kind)
    if kind.needs_base != (policy_cfg.base is not None):
        raise WMError(f"a {kind.name} policy {'needs' if kind.needs_base else 'has no'} base policy config")
    return kind.cls(policy_cfg)


def require_refinable(algo: str, kind: str, path) -> None:
    """A one-line error unless `--algo algo` refines policies of `kind`."""
    if REFINED.get(algo) != kind:
        raise WMError(f"--algo {algo} refines a {REFINED.get(algo)} BC policy; {path} is {kind}")
