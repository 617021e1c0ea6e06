import threading
from pathlib import Path

import pytest

from napari_pdmfuse.heap import _glibc_function, give_back_freed_memory


def resident_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(_glibc_function("malloc_trim") is None, reason="glibc's heap")
def test_memory_a_worker_thread_freed_goes_back_to_the_system():
    # As in a napari session: a fusion's worker thread allocates in its own heap and frees
    # all but what it still holds at the heap's top, which keeps the rest resident.
    kept = []

    def work():
        blocks = [bytearray(b"\1" * 65536) for _ in range(1500)]  # about 94 MiB, touched
        kept.append(blocks[-1])

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    before = resident_mib()
    give_back_freed_memory()
    assert resident_mib() < before - 50
