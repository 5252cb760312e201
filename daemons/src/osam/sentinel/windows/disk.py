"""Opening a whole disk (or a snapshot device) for raw reads, and its size in bytes.

Windows: os.open(r"\\\\.\\PhysicalDrive0", O_RDONLY | O_BINARY) opens the disk (Administrators
may read it while its volumes are mounted); reads must start and end on sector boundaries. The
size comes from DeviceIoControl(IOCTL_DISK_GET_LENGTH_INFO), which disks and volume devices
(\\\\?\\GLOBALROOT\\Device\\HarddiskVolumeShadowCopyN) both answer. Linux (and tests): a block
device's size through ioctl(BLKGETSIZE64), a file's through fstat.
"""
from __future__ import annotations

import os
import stat
import struct
import sys
from typing import Union

IOCTL_DISK_GET_LENGTH_INFO = 0x0007405C
BLKGETSIZE64 = 0x80081272          # _IOR(0x12, 114, size_t) on 64-bit Linux


def open_disk(path: str) -> int:
    """A read-only descriptor on a disk, volume or image file. Close it with os.close."""
    return os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))


def disk_size(fd_or_path: Union[int, str]) -> int:
    if isinstance(fd_or_path, int):
        return _size(fd_or_path)
    fd = open_disk(fd_or_path)
    try:
        return _size(fd)
    finally:
        os.close(fd)


def read_at(fd: int, offset: int, length: int) -> bytes:
    """Up to `length` bytes at `offset`. Windows has no pread: there the descriptor's position
    moves, so one descriptor must not be shared between threads."""
    if hasattr(os, "pread"):
        return os.pread(fd, length, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, length)


def _size(fd: int) -> int:
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode):
        return st.st_size
    if sys.platform == "win32":
        return _windows_length(fd)
    if stat.S_ISBLK(st.st_mode):
        import fcntl
        return struct.unpack("Q", fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8))[0]
    raise OSError("descriptor %d is neither a disk nor a regular file" % fd)


def _windows_length(fd: int) -> int:
    import ctypes
    import msvcrt
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.DeviceIoControl.argtypes = [wintypes.HANDLE, wintypes.DWORD, wintypes.LPVOID,
                                         wintypes.DWORD, wintypes.LPVOID, wintypes.DWORD,
                                         ctypes.POINTER(wintypes.DWORD), wintypes.LPVOID]
    kernel32.DeviceIoControl.restype = wintypes.BOOL
    length = ctypes.c_longlong(0)          # GET_LENGTH_INFORMATION: one LARGE_INTEGER
    returned = wintypes.DWORD(0)
    ok = kernel32.DeviceIoControl(wintypes.HANDLE(msvcrt.get_osfhandle(fd)),
                                  IOCTL_DISK_GET_LENGTH_INFO, None, 0, ctypes.byref(length),
                                  ctypes.sizeof(length), ctypes.byref(returned), None)
    if not ok:
        raise ctypes.WinError(ctypes.get_last_error())
    return length.value
