"""fer_jax's glibc malloc settings (fer_jax/malloc_settings.py): applied at import, they make a
jitted computation reuse its buffers instead of faulting in fresh pages every call; skipped when the
process chose its own settings."""
import json
import sys

import pytest

from fer_jax import malloc_settings
import fresh_python

# A jitted op whose 48 MiB output (above glibc's largest dynamic mmap threshold, 32 MiB) is freed
# after each call; how many of 100 calls fault in fresh pages for it (more than half of its pages).
# Reused buffers fault only while the process's heaps warm up (each thread arena once: 5-9 of 100
# calls, measured), glibc's own settings every call.
PROBE = """
import json, mmap, resource
import fer_jax
import jax, jax.numpy as jnp
f = jax.jit(lambda x: x * 2 + 1)
x = jnp.ones((12 << 20,), jnp.float32)
pages = x.nbytes // mmap.PAGESIZE
fresh = 0
for _ in range(100):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x).block_until_ready()
  fresh += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before > pages // 2
print(json.dumps({"applied": fer_jax.MALLOC_APPLIED, "fresh_calls": fresh}))
"""


def _probe(**env):
  unset = (malloc_settings.OPT_OUT, "GLIBC_TUNABLES") + malloc_settings.ENV_SETTINGS
  return json.loads(fresh_python.run(["-c", PROBE], env=env, unset=unset).strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc (Linux)")
def test_import_applies_the_settings_and_buffers_are_reused():
  r = _probe()
  assert r["applied"] == {k: v for k, (_, v) in malloc_settings.SETTINGS.items()}
  assert r["fresh_calls"] < 25, r


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc (Linux)")
def test_opting_out_faults_every_page_every_call():
  # The positive control: glibc's own settings unmap the output on free and fault it in again.
  r = _probe(**{malloc_settings.OPT_OUT: "0"})
  assert r["applied"] == {}
  assert r["fresh_calls"] > 90, r


@pytest.mark.parametrize("environ, reason", [
    ({}, None),
    ({"FER_JAX_TUNE_MALLOC": "1"}, None),
    ({"FER_JAX_TUNE_MALLOC": "0"}, "FER_JAX_TUNE_MALLOC=0"),
    ({"GLIBC_TUNABLES": "glibc.rtld.nns=2:glibc.malloc.trim_threshold=0"},
     "GLIBC_TUNABLES sets malloc tunables"),
    ({"GLIBC_TUNABLES": "glibc.rtld.nns=2"}, None),
    ({"MALLOC_ARENA_MAX": "2"}, "MALLOC_ARENA_MAX is set"),
])
def test_a_process_that_chose_its_malloc_settings_keeps_them(environ, reason):
  assert malloc_settings.why_skipped(environ) == reason


def test_apply_sets_nothing_when_skipped(monkeypatch):
  monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.top_pad=0")
  assert malloc_settings.apply() == {}
