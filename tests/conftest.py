"""Shared test setup.

* JAX's persistent compilation cache (compiles are slow on 2 CPU cores; the second run of the suite
  reuses them).
* absl flags marked as parsed: Grain worker processes read them (ENVIRONMENT.md).
* ``fixtures_dir``: the Ultralytics reference outputs in ``../shared/fixtures``.
"""
from __future__ import annotations

import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"
_CACHE = pathlib.Path(os.environ.get("YOLOJAX_TEST_JAX_CACHE", REPO / ".cache" / "jax_tests"))
_CACHE.mkdir(parents=True, exist_ok=True)
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

try:
    from absl import flags as _absl_flags

    _absl_flags.FLAGS.mark_as_parsed()
except Exception:  # pragma: no cover - absl is a dependency, but never fail collection on it
    pass


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"reference fixtures not found at {FIXTURES}")
    return FIXTURES
