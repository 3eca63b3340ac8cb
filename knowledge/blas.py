"""numpy's BLAS thread pool: the only module that imports ``threadpoolctl``."""

from __future__ import annotations

import numpy  # noqa: F401  (threadpoolctl acts on libraries already loaded: numpy's BLAS)
from django.conf import settings
from threadpoolctl import threadpool_limits


def limit_threads() -> None:
    """Cap numpy's BLAS (and any other already loaded) at the NUMPY_THREADS setting.

    A query's search is a few matrix-vector products; OpenBLAS splits a big one over
    every core, where the embedding model's threads and the event loop already run, and
    its threads then wait on each other (seen: a 2,000 x 384 product taking milliseconds).
    """
    threadpool_limits(limits=settings.NUMPY_THREADS, user_api="blas")
