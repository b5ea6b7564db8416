"""glibc malloc settings fer_jax applies at import: freed buffers stay in the process for reuse.

XLA CPU allocates every execution's buffers (a train step's temporaries: 58 MB at the size of
bench/backbone.py, input 107, width 0.25, batch 16) with malloc and frees them when the step ends.
glibc serves a request above its mmap threshold (dynamic, at most 32 MB) with a fresh mmap and
unmaps it on free, and shrinks a thread's heap once more than M_TOP_PAD (128 KiB) is free at its
top; either way the next step touches new pages, and the kernel zero-fills each on its first write:
~15,000 minor page faults and ~30 ms of system time in a 65 ms step on 2 cores (measured 2026-12-04,
getrusage per step).
With SETTINGS below the step reuses its pages: 0 faults, ~1 ms system time, 48-51 ms a step
(1.3-1.4x). PyTorch pays the same toll (4,500 faults, 66 -> 59 ms a step with these settings), so
bench/backbone.py runs both sides under them (its torch worker imports fer_jax too).

- M_MMAP_THRESHOLD 1 GiB: requests below it come from a heap, where a freed chunk is reused.
- M_TRIM_THRESHOLD 1 GiB: the main heap keeps up to 1 GiB free at its top instead of returning it.
- M_TOP_PAD 64 MiB: heaps grow with 64 MiB of slack and keep it. A thread's heap (glibc's thread
  arenas, at most 64 MiB each) is trimmed by this pad, not by M_TRIM_THRESHOLD: with the first two
  settings alone, 6,000 faults a step remained.
Cost: memory a process freed is kept (as tcmalloc and jemalloc keep it), so its RSS stays near its
peak; untouched slack is address space, not RSS.

Skipped, leaving malloc as it is, when FER_JAX_TUNE_MALLOC=0, when GLIBC_TUNABLES sets any
glibc.malloc tunable or a MALLOC_*_ variable is set (the process chose its own), or when the C
library is not glibc (no mallopt: macOS, musl).
"""
import ctypes
import os

# mallopt(3) parameter numbers (glibc's malloc.h) and values.
SETTINGS = {"M_MMAP_THRESHOLD": (-3, 1 << 30), "M_TRIM_THRESHOLD": (-1, 1 << 30),
            "M_TOP_PAD": (-2, 64 << 20)}
OPT_OUT = "FER_JAX_TUNE_MALLOC"  # =0: leave malloc as it is.
ENV_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                 "MALLOC_MMAP_MAX_", "MALLOC_ARENA_MAX")


def why_skipped(environ=os.environ) -> str | None:
  """Why this process keeps its malloc settings, or None when fer_jax applies SETTINGS."""
  if environ.get(OPT_OUT, "1") == "0":
    return f"{OPT_OUT}=0"
  if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
    return "GLIBC_TUNABLES sets malloc tunables"
  if named := [k for k in ENV_SETTINGS if k in environ]:
    return f"{named[0]} is set"
  return None


def apply() -> dict[str, int]:
  """Sets SETTINGS with mallopt unless why_skipped(); returns those glibc accepted ({}: none)."""
  if why_skipped() is not None:
    return {}
  try:
    libc = ctypes.CDLL(None)
    libc.gnu_get_libc_version  # pylint: disable=pointless-statement  # glibc only.
    mallopt = libc.mallopt
  except (OSError, AttributeError, TypeError):  # TypeError: CDLL(None) off POSIX.
    return {}
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  return {name: value for name, (param, value) in SETTINGS.items() if mallopt(param, value) == 1}
