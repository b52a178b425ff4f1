"""Rendering and torch/timm/triton in one process, in both import orders (issue 15, item 13).

Mesa's llvmpipe puts the system libLLVM in the global symbol scope when the first GL context is made; Triton's
libtriton.so (imported by torch._dynamo, hence by timm) carries its own LLVM and, dlopened after that, bound to
Mesa's copy and segfaulted. `envs` now loads libtriton before mujoco is imported (see envs/triton_preload.py). Each case
runs in a fresh interpreter, because a crash kills the process and pytest's own process has torch imported already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("timm")

REPORT = """
import hashlib, json
import numpy as np

def frame_report(frame):
    return {"shape": list(frame.shape), "dtype": str(frame.dtype), "std": float(frame.std()),
            "colors": int(len(np.unique(frame.reshape(-1, 3), axis=0))), "sha": hashlib.sha256(frame).hexdigest()}

def model_report():
    import timm, torch
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=4).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    return {"out_shape": list(out.shape), "finite": bool(torch.isfinite(out).all())}

def make_env():
    import gymnasium as gym, envs
    env = gym.make("wm/PointMaze-v0")
    env.reset(seed=0)
    return env
"""


def run(body: str) -> dict:
    """Run `body` (after REPORT's helpers) in a fresh interpreter with MUJOCO_GL=egl; its last stdout line is JSON."""
    env = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"}
    code = REPORT + textwrap.dedent(body)
    proc = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, f"exit {proc.returncode} (139/-11 is the segfault)\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def plain_frame() -> dict:
    """The reference frame: PointMaze after reset(seed=0), rendered in a process that never touches torch."""
    return run("""
        env = make_env()
        print(json.dumps(frame_report(env.render())))
    """)


def check_frame(report: dict, reference: dict) -> None:
    assert report["shape"] == [64, 64, 3] and report["dtype"] == "uint8"
    assert report["std"] > 5 and report["colors"] > 3, f"blank or flat frame: {report}"
    assert report["sha"] == reference["sha"], "frame differs from the one rendered without torch in the process"


def test_plain_frame_is_sane(plain_frame):
    check_frame(plain_frame, plain_frame)


def test_render_then_import_timm_and_run_a_model(plain_frame):
    # The exact order: render, then `import timm` (-> torchvision.ops -> torch._dynamo -> triton).
    out = run("""
        env = make_env()
        first = env.render()
        import timm
        report = model_report()
        print(json.dumps({"first": frame_report(first), "again": frame_report(env.render()), **report}))
    """)
    assert out["out_shape"] == [2, 4] and out["finite"]
    check_frame(out["first"], plain_frame)
    check_frame(out["again"], plain_frame)


def test_make_and_render_after_torch_and_timm_were_used(plain_frame):
    out = run("""
        import torch._dynamo  # triton (and its LLVM) loaded first, the order that was always safe
        before = model_report()
        env = make_env()
        frame = env.render()
        after = model_report()
        print(json.dumps({"frame": frame_report(frame), "before": before, "after": after}))
    """)
    for report in (out["before"], out["after"]):
        assert report["out_shape"] == [2, 4] and report["finite"]
    check_frame(out["frame"], plain_frame)


def test_import_envs_loads_neither_mujoco_nor_triton():
    # The preload waits for the first `import mujoco`, so `import envs` alone stays as light as before.
    out = run("""
        import importlib.util, sys
        maps = lambda: open("/proc/self/maps").read()
        import envs
        light = {m: m in sys.modules for m in ("mujoco", "torch", "triton")}
        light["libtriton"] = "libtriton" in maps()
        import mujoco
        print(json.dumps({"light": light, "triton_installed": importlib.util.find_spec("triton") is not None,
                          "preloaded": "libtriton" in maps(), "llvm": "libLLVM" in maps()}))
    """)
    assert not any(out["light"].values()), out
    assert not out["llvm"], "import mujoco alone already loaded Mesa's LLVM"
    if sys.platform.startswith("linux") and out["triton_installed"]:
        assert out["preloaded"], "libtriton was not loaded when mujoco was imported"
