"""The cache-directory lock: one builder at a time, and a waiting process names the holder."""

from __future__ import annotations

import fcntl
import json
import os
import threading

from analysis.runtime import exclusive_lock


def test_a_waiting_process_names_the_holder_then_records_itself(tmp_path, capsys):
    fd = os.open(tmp_path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, json.dumps({"pid": 4242, "host": "node7", "started": "10:00"}).encode())
    fcntl.flock(fd, fcntl.LOCK_EX)  # another builder (a lock of its own open file)
    release = threading.Timer(0.3, fcntl.flock, (fd, fcntl.LOCK_UN))
    release.start()
    try:
        with exclusive_lock(tmp_path, "building x"):
            owner = json.loads((tmp_path / "lock").read_text())
    finally:
        release.join()
        os.close(fd)
    assert "waiting for pid 4242 on node7 since 10:00 (building x in" in capsys.readouterr().err
    assert owner["pid"] == os.getpid() and "host" in owner and "started" in owner


def test_a_read_only_cache_is_not_locked(tmp_path):
    cache = tmp_path / "ro"
    cache.mkdir()
    cache.chmod(0o555)
    try:
        with exclusive_lock(cache, "reading"):
            pass
        assert not (cache / "lock").exists() or os.geteuid() == 0  # root may write anyway
    finally:
        cache.chmod(0o755)
