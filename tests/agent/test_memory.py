from __future__ import annotations

import platform

import pytest

from agent.memory import limit_malloc_arenas

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc malloc only")


@glibc
def test_malloc_settings_apply_on_glibc() -> None:
    assert limit_malloc_arenas() is True
