"""End to end into disk replicas: the guest's root and /srv are real file systems on a real
disk (a loop device with a GPT label), the receiver rebuilds that disk as an image with the
same partition table and file systems, mounts it, and full, continuous and final sync write
into it. The replica is compared with the source while mounted during continuous sync and
after the migration, when it is an unmounted image again."""
from __future__ import annotations

import json
import subprocess

import pytest

from osam.storage.replica_disks import ReplicaDisks
from tests.e2e.site import wait_for
from tests.util.trees import diff_trees, make_rich_tree, mutate_rich_tree

pytestmark = [pytest.mark.need_root, pytest.mark.e2e, pytest.mark.slow]

STAGING = [b".osam-staging", b"srv/.osam-staging"]


def sh(*argv) -> str:
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True).stdout


def replica_matches(src, replica, ignore):
    try:
        return not diff_trees(src, replica, ignore=ignore)
    except FileNotFoundError:       # an entry replaced mid-snapshot: look again
        return False


def test_disk_replica_keeps_layout_and_files_through_continuous_and_final_sync(site, source_disk):
    src, loop = source_disk
    make_rich_tree(src)
    make_rich_tree(src / "srv" / "rich", seed=7)
    etc = site.base / "etc-guest"
    (etc / "etc").mkdir(parents=True)
    (etc / "etc" / "sync.params").write_text("max_retry_interval=2\n")
    site.start_receiver(replica_format="disk", extra=["--no-fixup"])
    site.start_gateway()
    site.start_sentinel("diskguest", src, etc)
    wait_for(lambda: site.guest("diskguest"), 30, "the guest to register")

    layout = site.guest("diskguest")["inventory"]["layout"]
    assert [d["name"] for d in layout["disks"]] == [loop.rsplit("/", 1)[1]], "only the disk behind --root"
    assert site.osamctl("migrate", "diskguest", "--switchover", "manual").returncode == 0
    site.wait_phase("diskguest", "continuous_sync", 180)
    wait_for(lambda: site.migration("diskguest")["last_sync_at"], 60, "the first continuous pass")

    replica_dir = site.data / "replicas" / "diskguest"
    replica = replica_dir / "root"
    image = replica_dir / "disks" / (layout["disks"][0]["name"] + ".raw")
    # The image carries the source's partition table and file system identifiers.
    src_table = json.loads(sh("sfdisk", "--json", loop))["partitiontable"]
    img_table = json.loads(sh("sfdisk", "--json", image))["partitiontable"]
    assert img_table["id"] == src_table["id"]
    assert [(p["start"], p["size"], p["type"], p["uuid"], p.get("name")) for p in img_table["partitions"]] == \
           [(p["start"], p["size"], p["type"], p["uuid"], p.get("name")) for p in src_table["partitions"]]
    assert sh("findmnt", "-n", "-o", "FSTYPE", replica).strip() == "ext4"
    assert sh("findmnt", "-n", "-o", "FSTYPE", replica / "srv").strip() == "xfs"
    for part in ("p1", "p2", "p3"):
        want = sh("blkid", "-p", "-o", "export", loop + part)
        got = [line for line in sh("blkid", "-p", "-o", "export", f"{sh('losetup', '-j', image).split(':')[0]}{part}").splitlines()
               if line.split("=")[0] in ("UUID", "LABEL", "TYPE", "PART_ENTRY_UUID")]
        assert got == [line for line in want.splitlines() if line.split("=")[0] in ("UUID", "LABEL", "TYPE", "PART_ENTRY_UUID")]
    assert diff_trees(src, replica, ignore=STAGING) == []

    mutate_rich_tree(src)
    mutate_rich_tree(src / "srv" / "rich", seed=8)
    try:
        wait_for(lambda: replica_matches(src, replica, STAGING), 60, "continuous sync to carry every change")
    except AssertionError:
        pytest.fail("\n".join(diff_trees(src, replica, ignore=STAGING)) + site.dump_logs())

    (src / "srv" / "written-last").write_bytes(b"just before the switchover\n")
    assert site.osamctl("switchover", "diskguest").returncode == 0
    done = site.wait_phase("diskguest", "completed", 120)
    assert [h["to"] for h in done["history"]][-8:] == ["final_sync", "fixup", "replica_vm", "tools", "replica_on", "source_off", "network", "completed"]
    assert not replica.is_mount(), "a completed disk replica is unmounted"
    # The local destination's VM took over: on, NICs connected; the source (here: its sentinel) is off.
    vm_state = json.loads((replica_dir / "local-vm.json").read_text())
    assert (vm_state["power"], vm_state["nics_connected"]) == ("on", True)
    wait_for(lambda: not site.sentinels["diskguest"].running, 10, "the source's sentinel to stop")

    # Mounted again from its images alone, the replica is the source, file for file.
    disks = ReplicaDisks(str(replica_dir), layout)
    disks.mount()
    try:
        assert diff_trees(src, replica, ignore=STAGING) == []
        assert (replica / "srv" / "written-last").read_bytes() == b"just before the switchover\n"
    finally:
        disks.unmount()


def test_a_source_that_does_not_power_off_leaves_the_replica_off_and_asks_the_operator(site, source_disk):
    src, _ = source_disk
    (src / "etc").mkdir()
    (src / "etc" / "hostname").write_text("stubborn\n")
    site.start_receiver(replica_format="disk", extra=["--no-fixup", "--source-off-timeout", "3"])
    site.start_gateway()
    # A machine whose power-off does nothing: its links stay up.
    site.start_sentinel("stubborn", src, extra=["--power-off-command", "true"])
    wait_for(lambda: site.guest("stubborn"), 30, "the guest to register")
    assert site.osamctl("migrate", "stubborn", "--switchover", "immediate").returncode == 0
    m = site.wait_phase("stubborn", "needs_operator", 180)
    assert m["reason"] == ("the source did not power off within 3s; the replica stubborn is powered off with its "
                           "NICs connected: power off the source, then power on the replica")
    assert [h["to"] for h in m["history"]][-3:] == ["replica_on", "source_off", "needs_operator"]
    vm_state = json.loads((site.data / "replicas" / "stubborn" / "local-vm.json").read_text())
    assert (vm_state["power"], vm_state["nics_connected"]) == ("off", True)
    assert site.sentinels["stubborn"].running
    out = site.osamctl("status", "stubborn")
    assert "needs_operator" in out.stdout, out


def test_a_receiver_killed_during_the_cutover_carries_on_where_it_stopped(site, source_disk):
    src, _ = source_disk
    extra = ["--no-fixup", "--source-off-timeout", "15"]
    site.start_receiver(replica_format="disk", extra=extra)
    site.start_gateway()
    site.start_sentinel("resumed", src, extra=["--power-off-command", "true"])
    wait_for(lambda: site.guest("resumed"), 30, "the guest to register")
    assert site.osamctl("migrate", "resumed", "--switchover", "immediate").returncode == 0
    site.wait_phase("resumed", "source_off", 180)
    site.receiver.kill()
    site.start_receiver(replica_format="disk", extra=extra)
    m = site.wait_phase("resumed", "needs_operator", 120)
    phases_seen = [h["to"] for h in m["history"]]
    assert phases_seen[-4:] == ["tools", "replica_on", "source_off", "needs_operator"]
    assert phases_seen.count("replica_vm") == 1 and phases_seen.count("source_off") == 1
    vm_state = json.loads((site.data / "replicas" / "resumed" / "local-vm.json").read_text())
    assert (vm_state["power"], vm_state["nics_connected"]) == ("off", True)
