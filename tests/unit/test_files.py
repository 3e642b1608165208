"""``harness.files.write_atomic``: a reader sees the old file or the new one, never a part."""

import os

import pytest

from harness import files


def test_writes_and_replaces(tmp_path):
    path = tmp_path / "out.xml"
    files.write_atomic(path, b"first")
    files.write_atomic(path, b"second")
    assert path.read_bytes() == b"second"
    assert os.listdir(tmp_path) == ["out.xml"]
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "out.xml"
    path.write_bytes(b"last night")

    def refuse(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", refuse)
    with pytest.raises(OSError, match="No space left"):
        files.write_atomic(path, b"tonight")
    assert path.read_bytes() == b"last night"
    assert os.listdir(tmp_path) == ["out.xml"]


def test_a_missing_directory_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        files.write_atomic(tmp_path / "missing" / "out.xml", b"x")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
