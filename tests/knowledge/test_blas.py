from __future__ import annotations

from threadpoolctl import threadpool_info

from knowledge import blas


def blas_threads() -> set[int]:
    """Threads of numpy's own BLAS (torch and scipy, loaded later, bring their own)."""
    pools = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    return {pool["num_threads"] for pool in pools if "numpy" in pool["filepath"]}


def test_numpy_blas_runs_on_the_configured_number_of_threads(settings) -> None:
    assert blas_threads() == {1}  # the default, applied when the app loaded
    settings.NUMPY_THREADS = 2
    try:
        blas.limit_threads()
        assert blas_threads() == {2}
    finally:
        settings.NUMPY_THREADS = 1
        blas.limit_threads()
    assert blas_threads() == {1}
