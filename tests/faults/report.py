"""One row per campaign, and the table `make faults` prints. Every campaign ends by comparing
each replica with its source byte for byte and by metadata; `mismatches` counts what differed
(it must be 0), `resent_bytes` what travelled more than once because of the faults."""
from __future__ import annotations

import dataclasses
from typing import Iterable, List


@dataclasses.dataclass
class CampaignResult:
    name: str
    seed: int
    faults: int = 0                 # faults injected (cuts, kills, full disks, clock jumps, inputs)
    migrations: int = 0             # migrations started
    completed: int = 0              # migrations that reached the phase the campaign expects
    files_verified: int = 0
    bytes_verified: int = 0
    mismatches: int = 0
    bytes_sent: int = 0             # data bytes the sentinels sent in all
    resent_bytes: int = 0           # of which more than once
    seconds: float = 0.0
    notes: List[str] = dataclasses.field(default_factory=list)

    @property
    def resent_fraction(self) -> float:
        return self.resent_bytes / self.bytes_sent if self.bytes_sent else 0.0


COLUMNS = ("campaign", "seed", "faults", "migrations", "completed", "files", "bytes", "mismatches", "resent", "s")


def table(results: Iterable[CampaignResult]) -> str:
    """The campaigns' table; its last line is `mismatches: N` (the total)."""
    results = list(results)
    rows = [COLUMNS] + [(r.name, str(r.seed), str(r.faults), str(r.migrations), str(r.completed),
                         str(r.files_verified), _size(r.bytes_verified), str(r.mismatches),
                         f"{r.resent_fraction:.1%}", f"{r.seconds:.0f}") for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    for r in results:
        lines.extend(f"  {r.name}: {note}" for note in r.notes)
    lines.append(f"mismatches: {sum(r.mismatches for r in results)}")
    return "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
