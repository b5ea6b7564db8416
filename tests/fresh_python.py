"""Python in a fresh process: for settings a process reads once (XLA_FLAGS, malloc at import)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(args, env=None, unset=()) -> str:
  """`python *args` on the CPU backend from the repo root; its stdout.

  `unset`: environment variables removed, then `env` set. Fails the test with the tail of the
  process's stderr when it exits non-zero.
  """
  full = dict(os.environ, JAX_PLATFORMS="cpu",
              PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  for name in unset:
    full.pop(name, None)
  full.update(env or {})
  proc = subprocess.run([sys.executable, *args], env=full, cwd=ROOT, capture_output=True,
                        text=True, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout
