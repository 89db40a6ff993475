"""Each thread and each forked worker draws decisions from a stream of its own."""

from __future__ import annotations

import os
import threading

from service.usecases.decisions import _thread_rng


def test_one_generator_per_thread_kept_between_calls() -> None:
    mine = _thread_rng()
    assert _thread_rng() is mine
    other: list = []
    thread = threading.Thread(target=lambda: other.append(_thread_rng()))
    thread.start()
    thread.join()
    assert other[0] is not mine


def test_a_forked_worker_does_not_repeat_its_parents_draws() -> None:
    parent = _thread_rng()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its first draws and leave at once
        os.write(write, _thread_rng().random(4).tobytes())
        os._exit(0)
    os.close(write)
    child_draws = os.read(read, 64)
    os.waitpid(pid, 0)
    os.close(read)
    assert child_draws != parent.random(4).tobytes()
