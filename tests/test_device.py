"""Device choice and the fixed CPU thread count that keeps CAMs runner-independent."""

from __future__ import annotations

import threading

import pytest
import torch

from wsss_core.model.device import cpu_threads, resolve_device


def test_auto_is_cpu_without_cuda_and_an_absent_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")


def test_the_count_holds_inside_and_the_old_one_returns_after():
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    with cpu_threads(wanted):
        assert torch.get_num_threads() == wanted
    assert torch.get_num_threads() == before


def test_a_caller_leaving_does_not_change_the_count_of_one_still_inside():
    """Shards on a thread pool: one finishing must not change another's arithmetic."""
    wanted = 1 if torch.get_num_threads() != 1 else 2
    inside, left = threading.Event(), threading.Event()
    seen: list[int] = []

    def long_shard() -> None:
        torch.ones(64, 64) @ torch.ones(64, 64)  # this thread has computed before
        with cpu_threads(wanted):
            inside.set()
            left.wait(10)
            seen.append(torch.get_num_threads())

    worker = threading.Thread(target=long_shard)
    worker.start()
    inside.wait(10)
    with cpu_threads(wanted):
        pass  # a short shard on another thread enters and leaves
    left.set()
    worker.join(10)
    assert seen == [wanted]


def test_threads_started_after_overlapping_shards_get_the_process_count():
    """A pool thread that first met torch inside another shard's block, and left
    last, must not leave that block's count as the default of later threads."""
    process_count = torch.get_num_threads()
    wanted = 1 if process_count != 1 else 2
    first_inside, second_inside, first_left = (threading.Event() for _ in range(3))

    def first_shard() -> None:
        with cpu_threads(wanted):
            first_inside.set()
            second_inside.wait(10)
        first_left.set()

    def second_shard() -> None:  # a fresh thread: its torch setup happens inside the first's
        first_inside.wait(10)
        with cpu_threads(wanted):
            second_inside.set()
            first_left.wait(10)

    threads = [threading.Thread(target=first_shard), threading.Thread(target=second_shard)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    seen: list[int] = []
    later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    later.start()
    later.join(10)
    assert seen == [process_count]
