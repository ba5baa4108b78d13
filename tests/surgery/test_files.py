"""surgery.files: atomic writes that fail with one clear line, and the writability check."""

from __future__ import annotations

import os
import tempfile

import pytest

from surgery import atomic_write_bytes, check_writable


def test_atomic_write_turns_write_failures_into_one_line_errors(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    (tmp_path / "file").write_text("x")
    for target, reason in ((tmp_path, "it is a directory"),
                           (tmp_path / "file" / "m.pt", "a part of the path is a file")):
        with pytest.raises(ValueError, match=f"cannot write .*: {reason}"):
            atomic_write_bytes(target, b"data")
    monkeypatch.setattr(tempfile, "mkstemp", denied)  # as in a read-only directory
    with pytest.raises(ValueError, match="cannot write .*m.pt': permission denied; choose another"):
        atomic_write_bytes(tmp_path / "m.pt", b"data")


def test_check_writable_knows_files_from_directories(tmp_path):
    (tmp_path / "file").write_text("x")
    assert check_writable(tmp_path / "new" / "deeper" / "m.pt", "--save") == \
        tmp_path / "new" / "deeper" / "m.pt"
    check_writable(tmp_path / "runs", "--out", directory=True)
    with pytest.raises(ValueError, match="--out '.*file' is a file; give the path of a directory"):
        check_writable(tmp_path / "file", "--out", directory=True)
    with pytest.raises(ValueError, match="--save '.*' is a directory; give the path of a file"):
        check_writable(tmp_path, "--save")
    with pytest.raises(ValueError, match="file' is a file, not a directory"):
        check_writable(tmp_path / "file" / "runs", "--out", directory=True)
    assert not (tmp_path / "new").exists() and not (tmp_path / "runs").exists()  # nothing made


def test_a_directory_that_takes_no_files_is_refused(tmp_path):
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o555)
    try:
        if os.access(readonly, os.W_OK):  # root ignores the mode
            pytest.skip("this user can write in a read-only directory")
        with pytest.raises(ValueError, match="cannot write in .*ro' \\(permission denied\\)"):
            check_writable(readonly / "runs", "--out", directory=True)
    finally:
        readonly.chmod(0o755)
