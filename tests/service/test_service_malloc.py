"""service.malloc: image-sized buffers reuse heap pages instead of fresh mmaps."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from service.malloc import keep_buffers_on_heap

# each child process scores a 112 px crop 200 times (three 300 KB float64 arrays live at
# once, freed at the end: glibc's heap top shrinks back each time) and prints the minor
# page faults that cost
_FAULTS = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from models.quality import laplacian_score
    from service.malloc import keep_buffers_on_heap
    changed = keep_buffers_on_heap(int(sys.argv[1]))
    crop = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    laplacian_score(crop)  # the first one faults anyway
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(200):
        laplacian_score(crop)
    print(changed, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _faults(threshold_mb: int, **env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS, str(threshold_mb)], env={**clean, **env},
        capture_output=True, text=True, check=True,
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_crop_sized_arrays_stop_faulting_fresh_pages() -> None:
    untouched, faults_before = _faults(0)
    changed, faults_after = _faults(4)
    assert (untouched, changed) == ("False", "True")
    # 300 KB is 74 pages: given back on free, every score faults some of them in again
    assert faults_before > 200 * 50
    assert faults_after < 200


def test_the_operators_malloc_variables_win() -> None:
    changed, faults = _faults(4, MALLOC_MMAP_THRESHOLD_="131072")
    assert changed == "False"
    assert faults > 200 * 50  # glibc kept the operator's 128 KB threshold


def test_zero_leaves_malloc_alone() -> None:
    assert keep_buffers_on_heap(0) is False
