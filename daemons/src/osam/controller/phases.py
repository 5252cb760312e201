"""The migration lifecycle: phases, switchover modes and the one table of legal transitions.

Everything here is pure: the controller asks this module whether a move is legal and whether a
switchover is due, then persists the answer. Nothing else decides either question.
"""
from __future__ import annotations

from typing import Dict, FrozenSet, Optional

from .errors import Conflict

REGISTERED = "registered"
FULL_SYNC = "full_sync"
CONTINUOUS_SYNC = "continuous_sync"
QUIESCE = "quiesce"
FINAL_SYNC = "final_sync"
FIXUP = "fixup"
REPLICA_VM = "replica_vm"    # the destination's VM made from the replica, powered off, NICs disconnected
TOOLS = "tools"              # VMware Tools installed where the destination offers it
REPLICA_ON = "replica_on"    # the replica powered on, still cut off from the network
SOURCE_OFF = "source_off"    # the source powered off
NETWORK = "network"          # the replica's NICs connected: it has taken over
COMPLETED = "completed"
NEEDS_OPERATOR = "needs_operator"   # the cutover stopped half-way; the reason says what to do
FAILED = "failed"

# In lifecycle order; `osamctl migrate --wait` relies on this order.
PHASES = (REGISTERED, FULL_SYNC, CONTINUOUS_SYNC, QUIESCE, FINAL_SYNC, FIXUP, REPLICA_VM, TOOLS,
          REPLICA_ON, SOURCE_OFF, NETWORK, COMPLETED, NEEDS_OPERATOR, FAILED)
TERMINAL: FrozenSet[str] = frozenset({COMPLETED, NEEDS_OPERATOR, FAILED})
# After the final sync: the receiver drives these without the guest's data.
CUTOVER: FrozenSet[str] = frozenset({FIXUP, REPLICA_VM, TOOLS, REPLICA_ON, SOURCE_OFF, NETWORK})
# Phases in which the switchover can still be requested, rescheduled or cancelled.
BEFORE_SWITCHOVER: FrozenSet[str] = frozenset({REGISTERED, FULL_SYNC, CONTINUOUS_SYNC})

MANUAL = "manual"        # wait for an operator's switchover request
IMMEDIATE = "immediate"  # go as soon as the first continuous sync pass is done
AT = "at"                # go when the scheduled time (ISO 8601 with a zone) is reached, and
                         # before the window's end when one is set
SWITCHOVER_MODES = (MANUAL, IMMEDIATE, AT)

ABORTED_REASON = "aborted by operator"

# Guard names a transition may require; the caller states which ones hold.
SWITCHOVER_IS_DUE = "switchover is due"

# from phase -> {to phase: guard or None}. Any non-terminal phase may also go to FAILED.
TRANSITIONS: Dict[str, Dict[str, Optional[str]]] = {
    REGISTERED: {FULL_SYNC: None},
    FULL_SYNC: {CONTINUOUS_SYNC: None},
    CONTINUOUS_SYNC: {QUIESCE: SWITCHOVER_IS_DUE},
    QUIESCE: {FINAL_SYNC: None},
    FINAL_SYNC: {FIXUP: None},
    FIXUP: {REPLICA_VM: None},
    REPLICA_VM: {TOOLS: None},
    TOOLS: {REPLICA_ON: None},
    REPLICA_ON: {SOURCE_OFF: None},
    SOURCE_OFF: {NETWORK: None, NEEDS_OPERATOR: None},
    NETWORK: {COMPLETED: None},
    COMPLETED: {},
    NEEDS_OPERATOR: {},
    FAILED: {},
}


class IllegalTransition(Conflict):
    def __init__(self, from_phase: str, to_phase: str, why: str = "not a legal transition"):
        super().__init__(f"{from_phase} -> {to_phase}: {why}")
        self.from_phase = from_phase
        self.to_phase = to_phase


def is_terminal(phase: str) -> bool:
    return phase in TERMINAL


def check_transition(from_phase: str, to_phase: str, holds: FrozenSet[str] = frozenset()) -> None:
    """Raise IllegalTransition unless from_phase -> to_phase is in the table and its guard holds."""
    if from_phase not in TRANSITIONS or to_phase not in TRANSITIONS:
        raise IllegalTransition(from_phase, to_phase, "unknown phase")
    if is_terminal(from_phase):
        raise IllegalTransition(from_phase, to_phase, f"{from_phase} is terminal")
    if to_phase == FAILED:
        return
    allowed = TRANSITIONS[from_phase]
    if to_phase not in allowed:
        raise IllegalTransition(from_phase, to_phase)
    guard = allowed[to_phase]
    if guard is not None and guard not in holds:
        raise IllegalTransition(from_phase, to_phase, f"only when {guard}")


def switchover_due(phase: str, mode: str, requested: bool, at: Optional[float],
                   continuous_pass_done: bool, now: float,
                   window_end: Optional[float] = None) -> bool:
    """Whether continuous sync should give way to quiesce now.

    An operator's request wins in every mode; otherwise the mode decides. A scheduled
    switchover starts when `at <= now < window_end` (no end: any time from `at` on); once the
    window has closed it does not start, and the migration waits for a new time. Only
    meaningful in continuous_sync: earlier the replica is not yet complete, later the
    switchover has begun.
    """
    if phase != CONTINUOUS_SYNC:
        return False
    if requested:
        return True
    if mode == IMMEDIATE:
        return continuous_pass_done
    if mode == AT:
        return in_window(at, window_end, now)
    return False


def in_window(at: Optional[float], window_end: Optional[float], now: float) -> bool:
    """Whether `now` falls in the scheduled window [at, window_end)."""
    return at is not None and at <= now and (window_end is None or now < window_end)


def switchover_window_missed(phase: str, mode: str, requested: bool,
                             window_end: Optional[float], now: float) -> bool:
    """Whether a scheduled switchover's window has closed before the switchover began.

    Then the migration keeps syncing and waits for a new time (a reschedule), a cancel, or an
    operator's request. Once the switchover has begun, or the migration has ended, nothing was
    missed.
    """
    return (phase in BEFORE_SWITCHOVER and mode == AT and not requested
            and window_end is not None and now >= window_end)
