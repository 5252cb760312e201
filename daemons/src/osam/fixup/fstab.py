"""/etc/fstab and /etc/crypttab name devices the way the destination will see them.

Kernel names and by-path/by-id links of the source's disks (see devices.py) become UUID=
with the UUID the inventory gives for that device (or, in fstab, for that mount point);
swap is treated the same. UUID=, LABEL=, PARTUUID=, /dev/mapper and LVM names stay. Network
file systems get nofail and _netdev: the first boot may come up before (or without) the old
network, and must not wait for them. A device the inventory does not know is left as it is
and reported. Comments, order and the file's spacing are kept; the column after a rewritten
field is padded or shrunk so aligned files stay aligned.
"""
from __future__ import annotations

import re
from typing import Callable, List, Optional

from .context import FixupContext
from .devices import DeviceMap, is_unstable_device_path

STEP = "fstab"

NETWORK_FILESYSTEMS = {"nfs", "nfs4", "cifs", "smbfs", "smb3", "glusterfs", "ceph", "sshfs",
                       "davfs", "9p", "afs", "lustre", "ocfs2", "gfs2"}
NETWORK_OPTIONS = ("nofail", "_netdev")


def apply(ctx: FixupContext) -> None:
    devices = DeviceMap(ctx.inventory)
    _edit(ctx, "/etc/fstab", lambda fields, warn: fix_fstab_entry(fields, devices, warn),
          "device names replaced by UUID=, network mounts made optional")
    _edit(ctx, "/etc/crypttab", lambda fields, warn: fix_crypttab_entry(fields, devices, warn),
          "encrypted devices named by UUID=")


def _edit(ctx: FixupContext, path: str, fix: Callable, detail: str) -> None:
    text = ctx.read_text(path)
    if text is None:
        return
    lines = []
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        lines.append(fix_line(line, fix, lambda msg: ctx.warn(STEP, f"{path}:{number}: {msg}")))
    ctx.write_text(path, "".join(lines), STEP, detail)


class Fields:
    """One table line as fields and the whitespace around them, so edits keep the layout."""

    def __init__(self, line: str):
        body = line.rstrip("\r\n")
        self.newline = line[len(body):]
        self.tokens = re.split(r"(\s+)", body)   # field, space, field, ... ('' at the ends)

    def _index(self, n: int) -> Optional[int]:
        positions = [i for i in range(0, len(self.tokens), 2) if self.tokens[i]]
        return positions[n] if n < len(positions) else None

    def __len__(self) -> int:
        return sum(1 for i in range(0, len(self.tokens), 2) if self.tokens[i])

    def __getitem__(self, n: int) -> str:
        index = self._index(n)
        return self.tokens[index] if index is not None else ""

    def __setitem__(self, n: int, value: str) -> None:
        index = self._index(n)
        if index is None:
            self.append(value)
            return
        grow = len(value) - len(self.tokens[index])
        self.tokens[index] = value
        after = index + 1
        if after + 1 < len(self.tokens) and self.tokens[after + 1] and set(self.tokens[after]) == {" "}:
            self.tokens[after] = _realigned(self.tokens[after], grow)

    def append(self, value: str) -> None:
        while self.tokens and self.tokens[-1] == "":
            self.tokens.pop()
        separator = "\t" if "\t" in "".join(self.tokens[1::2]) else " "
        self.tokens += [separator, value]

    def text(self) -> str:
        return "".join(self.tokens) + self.newline


def _realigned(separator: str, grow: int) -> str:
    """The spaces after a field that grew (or shrank) by `grow`: padding (3 spaces or more)
    keeps the next column where it was, as far as it can; a style of one or two spaces stays."""
    if len(separator) < 3 and grow < 0:
        return separator
    return " " * max(1, len(separator) - grow)


def fix_line(line: str, fix: Callable, warn: Callable[[str], None]) -> str:
    if not line.strip() or line.lstrip().startswith("#"):
        return line
    fields = Fields(line)
    fix(fields, warn)
    return fields.text()


def fix_fstab_entry(fields: Fields, devices: DeviceMap, warn: Callable[[str], None]) -> None:
    spec, mountpoint, fstype = fields[0], fields[1], fields[2]
    if is_unstable_device_path(spec):
        uuid = devices.uuid_for(spec, mountpoint if fstype != "swap" else None)
        if uuid:
            fields[0] = f"UUID={uuid}"
        else:
            warn(f"{spec} ({mountpoint}) is not in the source's inventory; left as it is")
    if is_network_filesystem(fstype, spec):
        options = fields[3].split(",") if len(fields) > 3 else ["defaults"]
        missing = [o for o in NETWORK_OPTIONS if o not in options]
        if missing:
            fields[3] = ",".join(options + missing)


def fix_crypttab_entry(fields: Fields, devices: DeviceMap, warn: Callable[[str], None]) -> None:
    name, device = fields[0], fields[1]
    if is_unstable_device_path(device):
        uuid = devices.uuid_for(device)
        if uuid:
            fields[1] = f"UUID={uuid}"
        else:
            warn(f"{device} ({name}) is not in the source's inventory; left as it is")


def is_network_filesystem(fstype: str, spec: str = "") -> bool:
    if fstype in NETWORK_FILESYSTEMS or fstype.startswith("fuse."):
        return True
    return fstype == "fuse" and "#" in spec    # sshfs#user@host:/path fuse ...


def entries(text: str) -> List[List[str]]:
    """The fields of each entry (comments and blank lines left out)."""
    return [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
