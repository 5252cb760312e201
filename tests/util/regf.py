"""Registry hive files for tests, built from the published REGF layout.

Nothing installed on a receiver creates an empty hive (hivexsh, hivexregedit and samba's
tools only edit an existing file), so `empty_hive` writes one byte by byte: the 4 KiB base
block, then one 4 KiB hive bin holding the root key (nk), the security cell (sk) every key
points at (hivex copies the parent's when it adds a child) and one free cell for the rest.
`make_system_hive` then fills such a file, through hivex, with what a Windows SYSTEM hive
holds that the offline Windows fix-up reads and edits.

Offsets inside the hive bins data are relative to its start (file offset 4096); a cell starts
with its size as a signed 32-bit number, negative while allocated, always a multiple of 8.
"""
from __future__ import annotations

import struct
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

BASE_BLOCK_SIZE = 4096
HBIN_SIZE = 4096
HBIN_HEADER_SIZE = 32
CHECKSUM_OFFSET = 0x1FC
NO_CELL = 0xFFFFFFFF

KEY_HIVE_ENTRY = 0x0004
KEY_NO_DELETE = 0x0008
KEY_COMP_NAME = 0x0020

# 2024-01-01T00:00:00Z as a Windows FILETIME (100 ns since 1601): fixed so builds repeat.
FILETIME = 133485408000000000

REG_SZ, REG_EXPAND_SZ, REG_BINARY, REG_DWORD, REG_MULTI_SZ, REG_QWORD = 1, 2, 3, 4, 7, 11

STORAGE_CLASSES = ("{4D36E967-E325-11CE-BFC1-08002BE10318}",   # disk drives
                   "{4D36E97B-E325-11CE-BFC1-08002BE10318}")   # SCSI adapters


def _align8(n: int) -> int:
    return (n + 7) & ~7


def checksum(base_block: bytes) -> int:
    """XOR of the first 508 bytes as little-endian dwords; 0 and 0xFFFFFFFF are reserved."""
    value = 0
    for (dword,) in struct.iter_unpack("<I", base_block[:CHECKSUM_OFFSET]):
        value ^= dword
    if value == 0xFFFFFFFF:
        return 0xFFFFFFFE
    return value or 1


def _sid(authority: int, *subs: int) -> bytes:
    return struct.pack("<BB", 1, len(subs)) + authority.to_bytes(6, "big") + \
        b"".join(struct.pack("<I", s) for s in subs)


def security_descriptor() -> bytes:
    """Self-relative: owner BUILTIN\\Administrators, group SYSTEM, a DACL granting
    Everyone KEY_ALL_ACCESS, inherited by subkeys."""
    owner, group, everyone = _sid(5, 32, 544), _sid(5, 18), _sid(1, 0)
    ace = struct.pack("<BBHI", 0, 0x02, 8 + len(everyone), 0x000F003F) + everyone
    acl = struct.pack("<BBHHH", 2, 0, 8 + len(ace), 1, 0) + ace
    header = 20
    owner_at, group_at, dacl_at = header, header + len(owner), header + len(owner) + len(group)
    control = 0x8000 | 0x0004   # self-relative, DACL present
    return struct.pack("<BBHIIII", 1, 0, control, owner_at, group_at, 0, dacl_at) + owner + group + acl


def _nk_cell(name: str, sk_offset: int) -> bytes:
    raw = name.encode("ascii")
    body = struct.pack(
        "<2sHQ15IHH", b"nk", KEY_HIVE_ENTRY | KEY_NO_DELETE | KEY_COMP_NAME, FILETIME,
        0,              # access bits
        0,              # parent (the root has none)
        0, 0,           # subkeys, volatile subkeys
        NO_CELL, NO_CELL,
        0, NO_CELL,     # values and their list
        sk_offset, NO_CELL,
        0, 0, 0, 0,     # largest subkey name / class / value name / value data
        0,              # work var
        len(raw), 0) + raw
    return _cell(body)


def _sk_cell(own_offset: int) -> bytes:
    sd = security_descriptor()
    # flink and blink point at the cell itself: the hive's only security cell.
    return _cell(struct.pack("<2sHIIII", b"sk", 0, own_offset, own_offset, 1, len(sd)) + sd)


def _cell(body: bytes) -> bytes:
    size = _align8(4 + len(body))
    return struct.pack("<i", -size) + body + b"\0" * (size - 4 - len(body))


def empty_hive_bytes(root_name: str = "ROOT", minor_version: int = 5) -> bytes:
    """The bytes of a hive holding only its root key."""
    if minor_version not in (3, 5):
        raise ValueError("REGF minor versions 3 and 5 are what Windows writes")
    root_at = HBIN_HEADER_SIZE
    root_len = len(_nk_cell(root_name, 0))
    sk_at = root_at + root_len
    cells = _nk_cell(root_name, sk_at) + _sk_cell(sk_at)
    free = HBIN_SIZE - HBIN_HEADER_SIZE - len(cells)
    cells += struct.pack("<i", free) + b"\0" * (free - 4)
    hbin = struct.pack("<4sIIQQI", b"hbin", 0, HBIN_SIZE, 0, FILETIME, 0) + cells
    assert len(hbin) == HBIN_SIZE

    base = bytearray(BASE_BLOCK_SIZE)
    struct.pack_into("<4sIIQIIIIIII", base, 0, b"regf",
                     1, 1,                  # primary and secondary sequence: equal = clean
                     FILETIME, 1, minor_version,
                     0,                     # primary file
                     1,                     # direct memory load
                     root_at, HBIN_SIZE,    # root cell offset, hive bins data size
                     1)                     # clustering factor
    name = "\\osam\\test\\hive".encode("utf-16-le")[:64]
    base[0x30:0x30 + len(name)] = name
    struct.pack_into("<I", base, CHECKSUM_OFFSET, checksum(bytes(base)))
    return bytes(base) + hbin


def empty_hive(path: str, root_name: str = "ROOT", minor_version: int = 5) -> str:
    with open(path, "wb") as f:
        f.write(empty_hive_bytes(root_name, minor_version))
    return path


# -- a synthetic Windows SYSTEM hive ------------------------------------------------------------
def sz(text: str, kind: int = REG_SZ) -> Tuple[int, bytes]:
    return kind, (text + "\0").encode("utf-16-le")


def multi_sz(items: Sequence[str]) -> Tuple[int, bytes]:
    return REG_MULTI_SZ, "".join(i + "\0" for i in items).encode("utf-16-le") + b"\0\0"


def dword(n: int) -> Tuple[int, bytes]:
    return REG_DWORD, struct.pack("<I", n)


Values = Dict[str, Tuple[int, bytes]]

OLD_HYPERVISOR_SERVICES = ("viostor", "netkvm", "vmicheartbeat", "xenfilt", "VBoxGuest")
STATIC_INTERFACE = "{8D2A4E6C-1F0B-4E3A-9C55-0A1B2C3D4E5F}"
DHCP_INTERFACE = "{11111111-2222-3333-4444-555555555555}"


def system_hive_keys(*, control_set: int = 1, select: bool = True,
                     services: Iterable[str] = OLD_HYPERVISOR_SERVICES,
                     upper_filters: Sequence[str] = ("xenfilt", "PartMgr", "EhStorClass"),
                     lower_filters: Sequence[str] = ("vioscsi", "iaStorF"),
                     static_ip: Optional[Dict[str, List[str]]] = None,
                     with_sentinel: bool = True) -> Dict[str, Values]:
    """Key path (below the root, backslash-separated) → values, for make_system_hive."""
    cs = f"ControlSet{control_set:03d}"
    ip = static_ip or {"IPAddress": ["192.0.2.10"], "SubnetMask": ["255.255.255.0"],
                       "DefaultGateway": ["192.0.2.1"], "NameServer": ["192.0.2.53", "192.0.2.54"]}
    keys: Dict[str, Values] = {}
    if select:
        keys["Select"] = {"Current": dword(control_set), "Default": dword(control_set),
                          "Failed": dword(0), "LastKnownGood": dword(control_set)}
    keys[f"{cs}\\Control\\CriticalDeviceDatabase\\pci#ven_8086&dev_7010"] = {
        "Service": sz("intelide"), "ClassGUID": sz("{4D36E96A-E325-11CE-BFC1-08002BE10318}")}
    keys[f"{cs}\\Control\\Class\\{STORAGE_CLASSES[0]}"] = {
        "Class": sz("DiskDrive"), "UpperFilters": multi_sz(upper_filters)}
    keys[f"{cs}\\Control\\Class\\{STORAGE_CLASSES[1]}"] = {
        "Class": sz("SCSIAdapter"), "LowerFilters": multi_sz(lower_filters)}
    keys[f"{cs}\\Services\\partmgr"] = {"Start": dword(0), "Type": dword(1)}
    keys[f"{cs}\\Services\\partmgr\\Parameters"] = {"SanPolicy": dword(2)}
    keys[f"{cs}\\Services\\LSI_SAS"] = {"Start": dword(3), "Type": dword(1), "ErrorControl": dword(1),
                                        "ImagePath": sz("System32\\drivers\\lsi_sas.sys", REG_EXPAND_SZ)}
    for name in services:
        keys[f"{cs}\\Services\\{name}"] = {"Start": dword(0 if name in ("viostor", "xenfilt") else 3),
                                           "Type": dword(1), "ErrorControl": dword(1)}
    if with_sentinel:
        keys[f"{cs}\\Services\\vmware-hcx-osam-sentinel"] = {"Start": dword(2), "Type": dword(0x10)}
    tcpip = f"{cs}\\Services\\Tcpip\\Parameters\\Interfaces"
    keys[f"{tcpip}\\{STATIC_INTERFACE}"] = {
        "EnableDHCP": dword(0), "IPAddress": multi_sz(ip["IPAddress"]),
        "SubnetMask": multi_sz(ip["SubnetMask"]), "DefaultGateway": multi_sz(ip["DefaultGateway"]),
        "NameServer": sz(",".join(ip["NameServer"]))}
    keys[f"{tcpip}\\{DHCP_INTERFACE}"] = {"EnableDHCP": dword(1), "DhcpIPAddress": sz("198.51.100.7")}
    keys[f"{cs}\\Control\\ComputerName\\ComputerName"] = {"ComputerName": sz("WIN-SOURCE")}
    return keys


def make_system_hive(path: str, hivex_module=None, **kwargs) -> str:
    """Write a synthetic SYSTEM hive at `path` (an empty hive filled through hivex); the
    keyword arguments are system_hive_keys's."""
    return populate(path, system_hive_keys(**kwargs), hivex_module)


def populate(path: str, keys: Dict[str, Values], hivex_module=None) -> str:
    if hivex_module is None:
        from osam.fixup.windows.hivex_loader import load_hivex
        hivex_module = load_hivex()
    empty_hive(path, root_name="ROOT")
    h = hivex_module.Hivex(path, write=True)
    for key_path, values in keys.items():
        node = h.root()
        for part in key_path.split("\\"):
            child = h.node_get_child(node, part)
            node = child if child else h.node_add_child(node, part)
        if values:
            h.node_set_values(node, [{"key": k, "t": t, "value": v} for k, (t, v) in values.items()])
    h.commit(path)
    del h
    return path
