"""The entry points' restart with glibc's huge-page malloc tunable (yolojax.hostenv)."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from yolojax import hostenv

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_tuned_env_adds_the_tunable_once_and_respects_the_user():
    env = hostenv.tuned_env({"PATH": "/bin"}, "linux")
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1" and env["PATH"] == "/bin"
    assert hostenv.tuned_env(env, "linux") is None  # already there: no second restart
    other = hostenv.tuned_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "linux")
    assert other["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert hostenv.tuned_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "linux") is None  # the user's choice
    assert hostenv.tuned_env({"YOLOJAX_HUGEPAGES": "0"}, "linux") is None
    assert hostenv.tuned_env({"YOLOJAX_HUGEPAGES": "off"}, "linux") is None
    assert hostenv.tuned_env({}, "darwin") is None and hostenv.tuned_env({}, "win32") is None
    # the other side of a comparison gets the environment as it was
    assert hostenv.original_env(env) == {"PATH": "/bin"}
    assert hostenv.original_env(other) == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}


_CHILD = r"""
import ctypes, os, sys
from yolojax.hostenv import restart_with_hugepages, active
print("pid", os.getpid(), flush=True)
restart_with_hugepages()
print("tunables", os.environ.get("GLIBC_TUNABLES", ""), "args", sys.argv[1:], "active", active(), flush=True)
# a block far above malloc's mmap threshold, touched: with the tunable it is backed by transparent huge pages
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
n = 256 << 20
p = libc.malloc(n)
ctypes.memset(p, 1, n)
rollup = open("/proc/self/smaps_rollup").read()
print("anon_huge_kb", [int(l.split()[1]) for l in rollup.splitlines() if l.startswith("AnonHugePages:")][0])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables: Linux only")
def test_restart_keeps_pid_and_arguments_and_gets_huge_pages():
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "YOLOJAX_HUGEPAGES")}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", _CHILD, "a", "b c"], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout.splitlines()
    pids = [line.split()[1] for line in out if line.startswith("pid")]
    assert len(pids) == 2 and pids[0] == pids[1]  # printed before and after the exec: the same process
    (line,) = [line for line in out if line.startswith("tunables")]
    assert "glibc.malloc.hugetlb=1" in line and "['a', 'b c']" in line and "active True" in line
    thp = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp.exists() and "[never]" not in thp.read_text():
        assert int(out[-1].split()[1]) >= 128 << 10  # most of the 256 MB block sits on huge pages
    off = subprocess.run([sys.executable, "-c", _CHILD], env=dict(env, YOLOJAX_HUGEPAGES="0"), capture_output=True,
                         text=True, timeout=120, check=True).stdout.splitlines()
    assert len([line for line in off if line.startswith("pid")]) == 1 and "active False" in off[1]
    if thp.exists() and "[madvise]" in thp.read_text():  # only what malloc asks for gets huge pages
        assert int(off[-1].split()[1]) == 0
