"""The first boot of a migrated Windows replica: what cannot be done offline from the receiver.

The receiver's fix-up registers the service vmware-osam-firstboot (this module, run by the
sentinel's Python) and writes firstboot.json beside where this runner keeps its state. The
work happens in stages, each finished by a reboot, as HCX does it:

  system   (service, LocalSystem)  create a temporary local administrator osam-fixup-XXXX
           with a random password, log it on automatically once (Winlogon), and have its
           session run the user stage (RunOnce); reboot
  user     (that user's session)   install the driver packages (pnputil), give each new NIC
           the static settings of the source NIC it replaces, install VMware Tools; reboot
  cleanup  (service, LocalSystem)  remove the autologon values and the password, delete the
           temporary user and its profile, the RunOnce entry, the service and the staged
           files (the log and result.json stay)
  done

The stages and their steps are a table; the state (state.json, written atomically before
each action and after it) says where the runner is, so a crash or a power cut resumes at the
step that was running. Whatever fails, the cleanup still runs: the temporary user and the
autologon password are never left behind. The password is only in memory and in Winlogon's
DefaultPassword until the cleanup: never in the state, the log or a command that is logged.

Every action on Windows goes through FirstBootOps; WindowsOps is the real one (net.exe,
powershell, pnputil, sc.exe, shutdown.exe, and winreg for Winlogon and RunOnce, so that the
password is never on a command line that could be logged), tests use a fake.

Python >= 3.9, standard library only: this runs from the sentinel's venv on the guest.
"""
from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import string
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

SERVICE = "vmware-osam-firstboot"
STATE_NAME = "state.json"
RESULT_NAME = "result.json"
LOG_NAME = "firstboot.log"
USER_PREFIX = "osam-fixup-"
RUNONCE_NAME = "VMwareOsamFirstBoot"
SERVICE_MODE, USER_MODE = "service", "user"
SYSTEM, USER, CLEANUP, DONE = "system", "user", "cleanup", "done"
# Boots the service waits for the user stage before re-arming the autologon once, then
# before giving it up and cleaning up.
USER_STAGE_BOOTS = 1
USER_STAGE_REARMS = 1
CLEANUP_ATTEMPTS = 3
OK_EXIT = {"pnputil": (0, 259, 3010), "installer": (0, 1641, 3010)}

log = logging.getLogger("osam.sentinel.firstboot")


class StepFailed(Exception):
    """An action on Windows failed; the message says which and why (never a secret)."""


# -- the actions on Windows -----------------------------------------------------------------------
class FirstBootOps:
    """Everything the runner does to Windows. The real one is WindowsOps."""

    def create_user(self, name: str, password: str) -> None:
        """A local administrator `name` with `password` (an existing one gets the password)."""
        raise NotImplementedError

    def delete_user(self, name: str) -> None:
        """The account and its profile (Win32_UserProfile), if they exist."""
        raise NotImplementedError

    def winlogon(self) -> Dict[str, str]:
        """Winlogon's autologon values, without DefaultPassword."""
        raise NotImplementedError

    def set_autologon(self, name: str, password: str, count: int) -> None:
        raise NotImplementedError

    def clear_autologon(self, restore: Dict[str, str]) -> None:
        """AutoAdminLogon off, DefaultPassword and AutoLogonCount gone, the user and domain
        names as they were before (`restore`)."""
        raise NotImplementedError

    def add_runonce(self, name: str, command: str) -> None:
        raise NotImplementedError

    def remove_runonce(self, name: str) -> None:
        raise NotImplementedError

    def add_driver(self, inf: str) -> None:
        raise NotImplementedError

    def set_static_ip(self, mac: str, settings: Dict[str, Any]) -> None:
        raise NotImplementedError

    def run(self, command: str) -> int:
        """Run a command line (an installer); returns its exit status."""
        raise NotImplementedError

    def reboot(self) -> None:
        raise NotImplementedError

    def delete_service(self, name: str) -> None:
        raise NotImplementedError

    def remove_files(self, directory: str, keep: Sequence[str]) -> None:
        """Everything in `directory` except the names in `keep`."""
        raise NotImplementedError


def new_password(length: int = 24) -> str:
    """Random, and complex enough for any password policy (all four character classes)."""
    classes = (string.ascii_uppercase, string.ascii_lowercase, string.digits, "!#%+-=?@^_")
    while True:
        chars = [secrets.choice("".join(classes)) for _ in range(length)]
        if all(any(c in cls for c in chars) for cls in classes):
            return "".join(chars)


def new_user_name() -> str:
    return USER_PREFIX + secrets.token_hex(2)


# -- state ------------------------------------------------------------------------------------------
def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def save_json(path: str, document: Dict[str, Any]) -> None:
    """Temp file, fsync, rename: a reader sees the old state or the new one, never a mix."""
    directory = os.path.dirname(path) or "."
    data = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
    fd, temp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    if hasattr(os, "O_DIRECTORY"):   # Windows has no directory handle to fsync
        from osam.common.atomic import fsync_dir
        fsync_dir(directory)


def load_json(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


@dataclass
class Stage:
    name: str
    mode: str                       # who runs it: the service or the user's session
    steps: Tuple[str, ...]
    next: str
    reboot: bool


# The user stage's steps run in this order (drivers first: the NICs the network step looks
# for appear once vmxnet3 is installed); firstboot.json's "steps" selects among them.
STAGES = {
    SYSTEM: Stage(SYSTEM, SERVICE_MODE, ("arm_autologon", "add_runonce"), USER, True),
    USER: Stage(USER, USER_MODE, ("drivers", "network", "tools"), CLEANUP, True),
    CLEANUP: Stage(CLEANUP, SERVICE_MODE,
                   ("clear_autologon", "remove_runonce", "delete_user", "remove_files", "delete_service"),
                   DONE, False),
}
OPTIONAL_STEPS = {"drivers", "network", "tools"}
# The cleanup's last steps remove the runner itself: only once the rest has succeeded, or on
# the last attempt.
FINAL_STEPS = ("remove_files", "delete_service")


class FirstBoot:
    def __init__(self, config: Dict[str, Any], directory: str, ops: FirstBootOps,
                 config_path: Optional[str] = None):
        self.config = config
        self.directory = directory
        self.config_path = config_path or os.path.join(directory, "firstboot.json")
        self.ops = ops
        self.state_path = os.path.join(directory, STATE_NAME)
        self.state: Dict[str, Any] = {}

    # -- the state machine ------------------------------------------------------------------
    def run(self, mode: str) -> int:
        """One pass, as the service at boot or in the user's session; returns the exit status."""
        if load_json(os.path.join(self.directory, RESULT_NAME)) is not None and \
                load_json(self.state_path) is None:
            return 0    # finished earlier: only the result is left
        self.state = load_json(self.state_path) or self.initial_state()
        if self.state["stage"] == USER and mode == SERVICE_MODE:
            if not self.user_stage_due():
                return 0
        while self.state["stage"] != DONE:
            stage = STAGES[self.state["stage"]]
            if stage.mode != mode:
                return 0
            outcome = self.run_stage(stage)
            if outcome == "retry":
                return 1
            self.advance(CLEANUP if outcome == "abort" else stage.next,
                         "failed" if outcome == "abort" else "completed")
            if outcome == "abort":
                continue          # straight to the cleanup, in this same process
            if stage.reboot:
                self.ops.reboot()
                return 0
        self.finish()
        return 0 if not self.state["failures"] else 1

    def initial_state(self) -> Dict[str, Any]:
        return {"version": 1, "stage": SYSTEM, "user": None, "steps": {}, "failures": [],
                "user_stage_boots": 0, "user_stage_rearms": 0, "cleanup_attempts": 0,
                "winlogon_before": None, "history": [{"at": now(), "event": "started"}]}

    def user_stage_due(self) -> bool:
        """At a boot in the user stage the service normally waits for the autologon; if the
        user stage did not finish during a whole boot, autologon is armed again once, then
        the user stage is given up so the cleanup can run."""
        self.state["user_stage_boots"] += 1
        if self.state["user_stage_boots"] <= USER_STAGE_BOOTS:
            self.save()
            return False
        if self.state["user_stage_rearms"] < USER_STAGE_REARMS:
            self.state["user_stage_rearms"] += 1
            self.state["user_stage_boots"] = 0
            self.event("the user stage did not finish: autologon armed again")
            try:
                self.arm_autologon()
                self.add_runonce()
            except Exception as exc:
                self.fail(USER, "rearm", exc)
                self.advance(CLEANUP, "failed")
                return True
            self.save()
            self.ops.reboot()
            return False
        self.fail(USER, "wait", StepFailed("the user stage did not run in the temporary user's session"))
        self.advance(CLEANUP, "failed")
        return True

    def run_stage(self, stage: Stage) -> str:
        """"ok", "abort" (the system stage failed: go to the cleanup) or "retry" (a cleanup
        step failed: the service tries again at the next boot)."""
        failed = False
        last_attempt = self.state["cleanup_attempts"] + 1 >= CLEANUP_ATTEMPTS
        for step in self.selected(stage):
            key = f"{stage.name}.{step}"
            record = self.state["steps"].get(key, {})
            if record.get("status") in ("done", "failed"):
                failed = failed or record["status"] == "failed"
                continue
            if stage.name == CLEANUP and step in FINAL_STEPS and failed and not last_attempt:
                break            # keep the service and its files: the next boot retries
            self.state["steps"][key] = {"status": "started", "at": now()}
            self.save()
            try:
                getattr(self, step)()
            except Exception as exc:
                self.fail(stage.name, step, exc)
                failed = True
                if stage.name == SYSTEM:
                    return "abort"
                continue
            self.state["steps"][key] = {"status": "done", "at": now()}
            self.save()
        if failed and stage.name == CLEANUP:
            return self.retry_cleanup()
        return "ok"

    def retry_cleanup(self) -> str:
        self.state["cleanup_attempts"] += 1
        if self.state["cleanup_attempts"] >= CLEANUP_ATTEMPTS:
            self.event("cleanup gave up after %d attempts" % self.state["cleanup_attempts"])
            return "ok"
        for key, record in list(self.state["steps"].items()):
            if key.startswith(CLEANUP + ".") and record.get("status") == "failed":
                del self.state["steps"][key]
        self.save()
        return "retry"

    def selected(self, stage: Stage) -> List[str]:
        wanted = set(self.config.get("steps") or [])
        return [s for s in stage.steps if s not in OPTIONAL_STEPS or s in wanted]

    def advance(self, stage: str, how: str) -> None:
        self.event(f"stage {self.state['stage']} {how}, next: {stage}")
        self.state["stage"] = stage
        self.save()

    def fail(self, stage: str, step: str, exc: BaseException) -> None:
        message = str(exc) or type(exc).__name__
        self.state["steps"][f"{stage}.{step}"] = {"status": "failed", "at": now(), "error": message}
        self.state["failures"].append({"stage": stage, "step": step, "error": message, "at": now()})
        log.error("%s.%s failed: %s", stage, step, message)
        self.save()

    def event(self, text: str) -> None:
        log.info("%s", text)
        self.state["history"].append({"at": now(), "event": text})

    def save(self) -> None:
        save_json(self.state_path, self.state)

    def finish(self) -> None:
        """The result stays beside the log; the state goes with the rest of the directory."""
        self.state["finished_at"] = now()
        save_json(os.path.join(self.directory, RESULT_NAME), self.state)
        try:
            os.unlink(self.state_path)
        except FileNotFoundError:
            pass
        log.info("first boot finished%s", " with failures" if self.state["failures"] else "")

    # -- system stage --------------------------------------------------------------------------
    def arm_autologon(self) -> None:
        """Create (or reset) the temporary user and arm one autologon with a new password,
        both in one step: the password exists only in this process and in Winlogon."""
        if self.state.get("winlogon_before") is None:
            before = self.ops.winlogon()
            self.state["winlogon_before"] = before
            if before.get("AutoAdminLogon") == "1":
                self.event("the source logged %s on automatically; autologon is left off after the "
                           "first boot" % (before.get("DefaultUserName") or "a user"))
        name = self.state.get("user") or new_user_name()
        self.state["user"] = name
        self.save()      # the name first: the cleanup must know whom to delete
        password = new_password()
        self.ops.create_user(name, password)
        self.ops.set_autologon(name, password, 1)
        log.info("temporary administrator %s created, autologon armed once", name)

    def add_runonce(self) -> None:
        python = self.config.get("python") or sys.executable
        command = f'"{python}" -m osam.sentinel.windows.firstboot --user --config "{self.config_path}"'
        self.ops.add_runonce(RUNONCE_NAME, command)

    # -- user stage ------------------------------------------------------------------------------
    def drivers(self) -> None:
        errors = []
        for driver in self.config.get("drivers") or []:
            try:
                self.ops.add_driver(driver["inf"])
                log.info("driver %s installed from %s", driver.get("name"), driver["inf"])
            except Exception as exc:
                errors.append(f"{driver.get('name')}: {exc}")
        if errors:
            raise StepFailed("; ".join(errors))

    def network(self) -> None:
        errors = []
        for entry in self.config.get("network") or []:
            try:
                self.ops.set_static_ip(entry["mac"], entry)
                log.info("static settings of %s applied to the NIC %s",
                         entry.get("source_name") or entry.get("source_mac"), entry["mac"])
            except Exception as exc:
                errors.append(f"{entry.get('mac')}: {exc}")
        if errors:
            raise StepFailed("; ".join(errors))

    def tools(self) -> None:
        tools = self.config.get("tools") or {}
        command = f'"{tools["installer"]}" {tools.get("arguments", "")}'.strip()
        status = self.ops.run(command)
        if status not in OK_EXIT["installer"]:
            raise StepFailed(f"VMware Tools installer exited {status}")

    # -- cleanup stage ---------------------------------------------------------------------------
    def clear_autologon(self) -> None:
        self.ops.clear_autologon(self.state.get("winlogon_before") or {})

    def remove_runonce(self) -> None:
        self.ops.remove_runonce(RUNONCE_NAME)

    def delete_user(self) -> None:
        if self.state.get("user"):
            self.ops.delete_user(self.state["user"])

    def remove_files(self) -> None:
        self.ops.remove_files(self.directory, [LOG_NAME, RESULT_NAME, STATE_NAME])

    def delete_service(self) -> None:
        self.ops.delete_service(self.config.get("service") or SERVICE)


# -- the real actions -----------------------------------------------------------------------------
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
WINLOGON = r"SOFTWARE\Microsoft\Windows NT\CurrentVersion\Winlogon"
RUNONCE = r"SOFTWARE\Microsoft\Windows\CurrentVersion\RunOnce"
ADMINISTRATORS_SID = "S-1-5-32-544"


class WindowsOps(FirstBootOps):
    """The actions with Windows' own tools. A command is logged with every secret replaced."""

    def __init__(self, secrets_to_hide: Optional[List[str]] = None):
        self._secrets = secrets_to_hide if secrets_to_hide is not None else []

    def _run(self, argv: Sequence[str], what: str, ok: Sequence[int] = (0,), *,
             stdin: Optional[str] = None) -> subprocess.CompletedProcess:
        shown = " ".join(argv)
        for secret in self._secrets:
            shown = shown.replace(secret, "********")
        log.info("running %s", shown)
        done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=3600)
        if done.returncode not in ok:
            output = (done.stderr or done.stdout or "").strip()
            for secret in self._secrets:
                output = output.replace(secret, "********")
            raise StepFailed(f"{what}: exit {done.returncode}: {output[-500:]}")
        return done

    def _powershell(self, script: str, what: str) -> subprocess.CompletedProcess:
        return self._run(["powershell.exe", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass",
                          "-Command", "-"], what, stdin=script)

    def create_user(self, name: str, password: str) -> None:
        self._secrets.append(password)
        exists = subprocess.run(["net.exe", "user", name], capture_output=True).returncode == 0
        if exists:
            self._run(["net.exe", "user", name, password], "resetting the temporary user's password")
        else:
            self._run(["net.exe", "user", name, password, "/add", "/y", "/passwordchg:no",
                       "/comment:VMware OSAM first boot (temporary)"], "creating the temporary user")
        group = self._powershell(
            f"(New-Object System.Security.Principal.SecurityIdentifier('{ADMINISTRATORS_SID}'))"
            ".Translate([System.Security.Principal.NTAccount]).Value.Split('\\')[-1]",
            "naming the Administrators group").stdout.strip()
        self._run(["net.exe", "localgroup", group, name, "/add"], "making the user an administrator",
                  ok=(0, 2))   # 2: already a member

    def delete_user(self, name: str) -> None:
        self._powershell(
            "$ErrorActionPreference = 'Stop'\n"
            f"try {{ $sid = (New-Object System.Security.Principal.NTAccount('{name}'))"
            ".Translate([System.Security.Principal.SecurityIdentifier]).Value } catch { exit 0 }\n"
            "Get-CimInstance Win32_UserProfile | Where-Object { $_.SID -eq $sid } | Remove-CimInstance\n",
            "deleting the temporary user's profile")
        if subprocess.run(["net.exe", "user", name], capture_output=True).returncode == 0:
            self._run(["net.exe", "user", name, "/delete"], "deleting the temporary user")

    def _winlogon_key(self, write: bool):
        import winreg
        access = (winreg.KEY_ALL_ACCESS if write else winreg.KEY_READ) | winreg.KEY_WOW64_64KEY
        return winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, WINLOGON, 0, access)

    def winlogon(self) -> Dict[str, str]:
        import winreg
        found = {}
        with self._winlogon_key(False) as key:
            for name in ("AutoAdminLogon", "DefaultUserName", "DefaultDomainName"):
                try:
                    found[name] = str(winreg.QueryValueEx(key, name)[0])
                except FileNotFoundError:
                    pass
        return found

    def set_autologon(self, name: str, password: str, count: int) -> None:
        import winreg
        with self._winlogon_key(True) as key:
            winreg.SetValueEx(key, "DefaultUserName", 0, winreg.REG_SZ, name)
            # The local account, also on a domain member.
            winreg.SetValueEx(key, "DefaultDomainName", 0, winreg.REG_SZ, os.environ.get("COMPUTERNAME", "."))
            winreg.SetValueEx(key, "DefaultPassword", 0, winreg.REG_SZ, password)
            winreg.SetValueEx(key, "AutoLogonCount", 0, winreg.REG_DWORD, count)
            winreg.SetValueEx(key, "AutoAdminLogon", 0, winreg.REG_SZ, "1")
        log.info("autologon armed for %s (%d logon)", name, count)

    def clear_autologon(self, restore: Dict[str, str]) -> None:
        import winreg
        with self._winlogon_key(True) as key:
            winreg.SetValueEx(key, "AutoAdminLogon", 0, winreg.REG_SZ, "0")
            for name in ("DefaultPassword", "AutoLogonCount"):
                try:
                    winreg.DeleteValue(key, name)
                except FileNotFoundError:
                    pass
            for name in ("DefaultUserName", "DefaultDomainName"):
                if name in restore:
                    winreg.SetValueEx(key, name, 0, winreg.REG_SZ, restore[name])
                else:
                    try:
                        winreg.DeleteValue(key, name)
                    except FileNotFoundError:
                        pass

    def add_runonce(self, name: str, command: str) -> None:
        import winreg
        with winreg.CreateKeyEx(winreg.HKEY_LOCAL_MACHINE, RUNONCE, 0,
                                winreg.KEY_SET_VALUE | winreg.KEY_WOW64_64KEY) as key:
            winreg.SetValueEx(key, name, 0, winreg.REG_SZ, command)

    def remove_runonce(self, name: str) -> None:
        import winreg
        try:
            with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, RUNONCE, 0,
                                winreg.KEY_SET_VALUE | winreg.KEY_WOW64_64KEY) as key:
                winreg.DeleteValue(key, name)
        except FileNotFoundError:
            pass

    def add_driver(self, inf: str) -> None:
        self._run(["pnputil.exe", "/add-driver", inf, "/install"], f"installing {inf}", ok=OK_EXIT["pnputil"])

    def set_static_ip(self, mac: str, settings: Dict[str, Any]) -> None:
        self._powershell(static_ip_script(mac, settings), f"configuring the NIC {mac}")

    def run(self, command: str) -> int:
        log.info("running %s", command)
        return subprocess.run(command, capture_output=True, timeout=3600).returncode

    def reboot(self) -> None:
        self._run(["shutdown.exe", "/r", "/t", "5", "/d", "p:4:2", "/c", "VMware OSAM first boot"], "rebooting")

    def delete_service(self, name: str) -> None:
        # 1060: the service does not exist (any more).
        self._run(["sc.exe", "delete", name], f"deleting the service {name}", ok=(0, 1060, 1072))

    def remove_files(self, directory: str, keep: Sequence[str]) -> None:
        for entry in os.listdir(directory):
            if entry in keep:
                continue
            path = os.path.join(directory, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)


def static_ip_script(mac: str, settings: Dict[str, Any]) -> str:
    """PowerShell that gives the adapter with `mac` the settings; every value is validated
    here, so nothing from the configuration reaches the script unchecked."""
    mac = mac.lower()
    if not MAC_RE.match(mac):
        raise StepFailed(f"not a MAC address: {mac!r}")
    addresses = [(str(ipaddress.IPv4Address(a["address"])), int(a["prefix"])) for a in settings.get("ipv4") or []]
    for _, prefix in addresses:
        if not 0 < prefix <= 32:
            raise StepFailed(f"not an IPv4 prefix length: {prefix}")
    gateways = [str(ipaddress.IPv4Address(g)) for g in settings.get("gateways") or []]
    dns = [str(ipaddress.ip_address(d)) for d in settings.get("dns") or []]
    lines = [
        "$ErrorActionPreference = 'Stop'",
        f"$mac = '{mac.upper().replace(':', '-')}'",
        "$adapter = $null",
        "foreach ($i in 1..60) {",   # the adapter appears once its driver is installed
        "  $adapter = Get-NetAdapter | Where-Object { $_.MacAddress -eq $mac } | Select-Object -First 1",
        "  if ($adapter) { break }; Start-Sleep -Seconds 2 }",
        "if (-not $adapter) { Write-Error \"no adapter with MAC $mac\"; exit 3 }",
        "$index = $adapter.ifIndex",
    ]
    if addresses:
        lines += [
            "Set-NetIPInterface -InterfaceIndex $index -AddressFamily IPv4 -Dhcp Disabled",
            "Get-NetIPAddress -InterfaceIndex $index -AddressFamily IPv4 -ErrorAction SilentlyContinue | "
            "Remove-NetIPAddress -Confirm:$false",
            "Get-NetRoute -InterfaceIndex $index -DestinationPrefix '0.0.0.0/0' -ErrorAction SilentlyContinue | "
            "Remove-NetRoute -Confirm:$false",
        ]
        for i, (address, prefix) in enumerate(addresses):
            gateway = f" -DefaultGateway '{gateways[0]}'" if i == 0 and gateways else ""
            lines.append(f"New-NetIPAddress -InterfaceIndex $index -IPAddress '{address}' "
                         f"-PrefixLength {prefix}{gateway} | Out-Null")
    if dns:
        servers = ",".join(f"'{d}'" for d in dns)
        lines.append(f"Set-DnsClientServerAddress -InterfaceIndex $index -ServerAddresses {servers}")
    return "\n".join(lines) + "\n"


# -- command line -----------------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m osam.sentinel.windows.firstboot",
                                description="The first boot of a migrated Windows replica.")
    p.add_argument("--config", required=True, help="firstboot.json (written by the receiver's fix-up)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--service", action="store_true", help="run under the service manager (LocalSystem)")
    who.add_argument("--user", action="store_true", help="the user stage, in the temporary user's session")
    who.add_argument("--system", action="store_true", help="the service's stages, from a console")
    return p.parse_args(argv)


def setup_logging(directory: str) -> None:
    handler = logging.FileHandler(os.path.join(directory, LOG_NAME), encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def runner_for(config_path: str, ops: Optional[FirstBootOps] = None) -> FirstBoot:
    directory = os.path.dirname(os.path.abspath(config_path))
    config = load_json(config_path)
    if config is None:
        raise FileNotFoundError(config_path)
    return FirstBoot(config, directory, ops or WindowsOps(), config_path)


def main(argv: Optional[Sequence[str]] = None,
         ops_factory: Callable[[], FirstBootOps] = WindowsOps) -> int:
    args = parse_args(argv)
    directory = os.path.dirname(os.path.abspath(args.config))
    if not os.path.exists(args.config):
        return 0     # finished: the directory holds only the log and the result
    setup_logging(directory)
    runner = runner_for(args.config, ops_factory())
    if args.service:
        from .service import run_as_service
        return run_as_service(SERVICE, lambda stop: runner.run(SERVICE_MODE))
    return runner.run(USER_MODE if args.user else SERVICE_MODE)


if __name__ == "__main__":
    sys.exit(main())
