import os
import stat

import pytest

from soraflow.atomic import atomic_path, write_json
from soraflow.errors import InputError


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []


def test_success_replaces_and_has_normal_permissions(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    write_json(target, {"a": 1})
    assert target.read_text().strip().replace(" ", "").replace("\n", "") == '{"a":1}'
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_unwritable_targets_fail_before_work(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        with atomic_path(tmp_path / "missing" / "x.txt"):
            pass
    with pytest.raises(InputError, match="is a directory"):
        with atomic_path(tmp_path):
            pass
