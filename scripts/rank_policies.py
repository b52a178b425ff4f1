"""Rank policies in imagination before spending real (robot) time on them: each policy runs on the same held-out
start/goal pairs of its env in the real env and inside its own world model (judged by the success head), and the
script reports how well imagined success ranks the policies as real success does: Spearman's rank correlation and
Pearson's r, over all policies and per env (WorldGym's test: imagined vs real, r = 0.78 there).

Every policy of one env runs on the same pairs (`--seed`, goal `--goal-offset` steps ahead, `--budget`-step episodes,
env-judged; the goals are the held-out episodes of the world model's training store where it is here, `--data
ENV=STORE` for another store, else fresh expert episodes collected once per env under `--out`). One JSON row per
policy is printed and appended to `OUT/rows.jsonl` as it finishes (a rerun skips the policies already there), then
the correlations (`OUT/ranking.json`) and `OUT/ranking.png` (imagined vs real success, one point per policy).

    python scripts/rank_policies.py --out runs/rank --episodes 50 \
        checkpoints/bc-wall checkpoints/ppo-wall checkpoints/dp-wall checkpoints/dsrl-wall ...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import envs  # noqa: F401  (first: the GL/LLVM load order)
from policies.checkpoint import load_policy
from policies.evaluation import evaluate_policy
from wm.errors import WMError
from wm.evaluation.goal_reaching import held_out_problems
from wm.evaluation.metrics import correlations


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("policies", nargs="+", help="policy checkpoints (or `wm bc` / `wm refine` --out folders)")
    p.add_argument("--out", required=True, help="folder for rows.jsonl, ranking.json, ranking.png and fresh goals")
    p.add_argument("--world-model", action="append", default=[], metavar="POLICY=CHECKPOINT",
                   help="a policy's world model, where it is not the one its config names")  # fmt: skip
    p.add_argument("--data", action="append", default=[], metavar="ENV=STORE", help="held-out goals of an env")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--budget", type=int, default=50)
    p.add_argument("--goal-offset", type=int, default=25)
    p.add_argument("--seed", type=int, default=9)
    args = p.parse_args()
    try:
        rank(args)
    except WMError as e:
        sys.exit(f"rank_policies: error: {e}")


def pairs_of(items: list[str], what: str) -> dict[str, str]:
    if any("=" not in item for item in items):
        raise WMError(f"{what} entries are KEY=VALUE, got {items}")
    return dict(item.split("=", 1) for item in items)


def rank(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data, world_models = pairs_of(args.data, "--data"), pairs_of(args.world_model, "--world-model")
    log = out / "rows.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    done = {row["policy"] for row in rows}
    problems, zeros = {}, {}
    for path in args.policies:
        if path in done:
            continue
        started = time.time()
        policy, _, model, wm_config = load_policy(path, world_models.get(path))
        env = wm_config.trained_on.env_id
        if env not in problems:  # every policy of an env on the same pairs (fresh goals: collected once)
            scratch = out / "goals" / env.replace("/", "_").replace(":", "_")
            goals = data.get(env) or (str(scratch) if scratch.is_dir() else None)
            problems[env] = held_out_problems(model.spec, wm_config.trained_on, env, episodes=args.episodes,
                                              budget=args.budget, goal_offset=args.goal_offset, seed=args.seed,
                                              data=goals, scratch=scratch, what="policy ranking")  # fmt: skip
        ev = evaluate_policy(policy, model, problems[env], problems[env].goals["store"], args.goal_offset,
                             imagined=True, seed=args.seed, videos=0, zero=zeros.get(env))  # fmt: skip
        zeros[env] = ev.zero
        results = ev.results
        row = {"policy": path, "env": env, "kind": policy.cfg.kind, "real": results["success_rate"],
               "real_95ci": results["success_95ci"], "imagined": results["imagined"]["rate"],
               "imagined_95ci": results["imagined"]["95ci"], "zero": results["zero_action_success"]["rate"],
               "agreement": round(results["imagined"]["agreement_with_real"], 4), "episodes": args.episodes,
               "seconds": round(time.time() - started, 1)}  # fmt: skip
        print(json.dumps(row), flush=True)
        with log.open("a") as f:
            f.write(json.dumps(row) + "\n")
        rows.append(row)
    for env_problems in problems.values():
        env_problems.close()
    report = ranking(rows)
    (out / "ranking.json").write_text(json.dumps(report, indent=2))
    plot(out / "ranking.png", rows, report)
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=2))


def ranking(rows: list[dict]) -> dict:
    """Correlations of imagined with real success over all policies and per env, with the rows they come from."""
    per_env = {}
    for env in sorted({row["env"] for row in rows}):
        mine = [row for row in rows if row["env"] == env]
        per_env[env] = correlations([r["imagined"] for r in mine], [r["real"] for r in mine])
    return {"all": correlations([r["imagined"] for r in rows], [r["real"] for r in rows]), "per_env": per_env,
            "policies": len(rows), "rows": rows}  # fmt: skip


def plot(path: Path, rows: list[dict], report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 5))
    for env in sorted({row["env"] for row in rows}):
        mine = [row for row in rows if row["env"] == env]
        ax.scatter([r["imagined"] for r in mine], [r["real"] for r in mine], label=env)
        for r in mine:
            ax.annotate(Path(r["policy"]).name, (r["imagined"], r["real"]), fontsize=6)
    ax.plot([0, 1], [0, 1], color="tab:gray", linestyle=":")
    every = report["all"]
    ax.set_title(f"{len(rows)} policies: Spearman {every['spearman']}, Pearson {every['pearson']}", fontsize=9)
    ax.set_xlabel("imagined success (world model, success head)")
    ax.set_ylabel("real success (env-judged)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
