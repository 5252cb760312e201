"""The Windows sentinel's own parts: the machine's inventory and disk layout (PowerShell and CIM),
quiesce with VSS snapshots, raw disk access, and running as a Windows service.

Everything that asks Windows something goes through a `commands.WindowsHost`, so these modules
import and are tested on Linux; ctypes' Windows-only parts are touched only when called.
"""
