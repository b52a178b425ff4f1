"""Loading Triton's LLVM before MuJoCo's GL stack, so that rendering and then torch/timm in one process works.

Rendering and then importing timm/torch._dynamo used to segfault. Cause, from gdb and LD_DEBUG:
on the first GL context Mesa's loader dlopens its driver (dri/swrast_dri.so, llvmpipe) with RTLD_GLOBAL, which puts
the system libLLVM-15.so.1 in the process's global symbol scope ("add ... libLLVM-15.so.1 to global scope").
Triton's libtriton.so (imported by torch._dynamo, which torchvision.ops and so timm import) carries its own, newer
LLVM and exports its ~24k llvm:: symbols unversioned without -Bsymbolic, so a dlopen after Mesa binds ~12k of them
to LLVM 15 ("binding file .../libtriton.so to libLLVM-15.so.1") and libtriton's static constructor
(_GLOBAL__sub_I_PassBuilder.cpp, llvm::DebugCounter) corrupts LLVM 15's objects: free() of a bad pointer, SIGSEGV.
The other order is safe: loaded first and RTLD_LOCAL, libtriton binds to itself and Mesa's LLVM never sees it. So
libtriton is loaded just before mujoco is first imported (the GL stack comes with or after it), not at `import envs`
time: it costs ~40 ms and ~70 MB of shared file pages, which a process that never renders skips.
"""

import sys


def _load_triton_before_mesa() -> None:
    """dlopen Triton's LLVM-carrying extension (RTLD_LOCAL) before Mesa's libLLVM enters the global scope."""
    import ctypes
    import importlib.util
    import warnings
    from pathlib import Path

    if not sys.platform.startswith("linux"):
        return
    spec = importlib.util.find_spec("triton")
    if spec is None or not spec.submodule_search_locations:
        return
    libs = sorted(Path(next(iter(spec.submodule_search_locations)), "_C").glob("libtriton*.so"))
    if not libs:
        return
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        return
    if "libtriton" in maps:
        return  # already loaded (e.g. torch._dynamo was imported): its symbols are bound, nothing to do
    if "libLLVM" in maps:
        warnings.warn(
            "Mesa's LLVM was loaded before `envs` (something rendered with OpenGL first); importing triton in this "
            "process (torch.compile, timm, torchvision.ops) may crash it. Import `envs` (or torch._dynamo) before "
            "anything renders.",
            RuntimeWarning,
            stacklevel=2,
        )
        return
    try:
        ctypes.CDLL(str(libs[0]))  # RTLD_LOCAL; Python's later `import triton._C.libtriton` reuses this handle
    except OSError:
        pass  # a broken triton install fails on its own import, as it would have without this preload


class _TritonBeforeMujoco:
    """Import hook: run `_load_triton_before_mesa` once, when `mujoco` is first imported (anywhere)."""

    fired = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "mujoco" and not self.fired:
            self.fired = True  # stays in sys.meta_path: removing a finder while the import system iterates skips one
            _load_triton_before_mesa()
        return None  # never finds anything itself: the normal finders import mujoco


def install() -> None:
    """Load libtriton now if mujoco is already imported, else when it first is (idempotent)."""
    if "mujoco" in sys.modules:
        _load_triton_before_mesa()  # EGL/GLX load Mesa only with the first context, so this is usually still in time
    elif not any(isinstance(f, _TritonBeforeMujoco) for f in sys.meta_path):
        sys.meta_path.insert(0, _TritonBeforeMujoco())
