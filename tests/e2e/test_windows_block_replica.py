"""A Windows guest's replica on the receiver, from registration to a fixed-up image: the
inventory a Windows sentinel sends (collected from a recorded Server 2019 machine through the
sentinel's own parser, since there is no Windows here), a block replica made to its disks, a
real full and final sync with the manifest check into it, then the receiver's offline
Windows fix-up on that image. What the fix-up wrote is read back from the replica's NTFS."""
from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from pathlib import Path

import pytest

from tests.util import is_root

if not is_root():
    pytest.skip("needs root: loop devices and ntfs-3g mounts", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "daemons" / "tests"))   # the recorded machines and their fake host

from osam.receiver.applier import Applier  # noqa: E402
from osam.receiver.checkpoint import CheckpointJournal  # noqa: E402
from osam.receiver.replica import BLOCK, BlockReplica, make_replica, replica_format_for  # noqa: E402
from osam.sentinel.block_replicator import BlockDiskSpec, BlockReplicator  # noqa: E402
from osam.sentinel.config import SentinelConfig  # noqa: E402
from osam.sentinel.windows.inventory import collect_windows_inventory  # noqa: E402
from tests.e2e.test_fixup_windows_ntfs import (CS, CONFIG, Volume, build_image, make_cache,  # noqa: E402
                                               read_value, release)
from tests.util import regf  # noqa: E402
from test_block_mode import pair, serve  # noqa: E402
from windows_fakes import host_for_machine, load  # noqa: E402

pytestmark = [pytest.mark.need_root, pytest.mark.slow]

PYTHON = r"C:\Program Files\VMware\HCX\osam\venv\Scripts\python.exe"


def windows_inventory(disk_size: int) -> dict:
    inventory = collect_windows_inventory(host_for_machine(load("server2019_uefi.json")),
                                          install_dir=r"C:\Program Files\VMware\HCX\osam", python=PYTHON)
    # The recorded machine's interface is the synthetic hive's static one.
    inventory["nics"][0]["guid"] = regf.STATIC_INTERFACE
    inventory["replication"] = {"mode": "block", "block_size": 1 << 20,
                                "disks": [{"name": "PhysicalDrive0", "path": r"\\.\PhysicalDrive0", "size": disk_size}]}
    return inventory


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def replicate(source: Path, replica: BlockReplica, state: Path, journal: str) -> dict:
    """Full sync, then the final sync with its manifest, over a real data link."""
    async def go():
        spec = BlockDiskSpec("PhysicalDrive0", str(source), source.stat().st_size)
        sentinel = BlockReplicator([spec], SentinelConfig(), str(state))
        store = replica.open_store()
        link, peer = await pair(sentinel.index)
        server = asyncio.ensure_future(serve(peer, Applier("app01", store, CheckpointJournal(journal)), []))
        try:
            await sentinel.full_sync(link, 1, None)
            return await sentinel.final_sync(link, 2)
        finally:
            await link.close()
            await peer.close()
            server.cancel()
            store.close()
    return asyncio.run(go())


def test_a_windows_guest_gets_a_block_replica_that_is_fixed_up_for_vsphere(tmp_path):
    source = build_image(tmp_path, "gpt")
    replica_dir = tmp_path / "replicas" / "app01"
    try:
        inventory = windows_inventory(source.stat().st_size)
        assert replica_format_for(inventory, "disk") == BLOCK
        replica_dir.mkdir(parents=True)
        replica = make_replica(BLOCK, str(replica_dir), str(make_cache(tmp_path)))
        replica.prepare("app01", inventory)
        vm = replica.vm()
        image = Path(vm["disks"][0]["image"])
        assert (vm["name"], vm["firmware"], vm["cpus"], vm["memory"]) == ("APP01", "uefi", 4, 8589463552)
        assert [d["size"] for d in vm["disks"]] == [source.stat().st_size]
        assert [n["source_mac"] for n in vm["nics"]] == [inventory["nics"][0]["mac"]]

        result = replicate(source, replica, tmp_path / "sentinel-state", str(replica_dir / "checkpoint.json"))
        assert result["manifest"]["ok"] is True
        assert sha(image) == sha(source)

        report = replica.fixup("app01", inventory)
        assert report["storage"] == "pvscsi" and report["warnings"] == [], report["warnings"]
        assert json.loads((replica_dir / "fixup-report.json").read_text())["storage"] == "pvscsi"
        with Volume(image) as root:
            hive = root / "Windows" / "System32" / "config" / "SYSTEM"
            assert read_value(hive, f"{CS}\\Services\\pvscsi", "Start") == 0
            assert read_value(hive, f"{CS}\\Services\\vmware-hcx-osam-sentinel", "Start") == 4
            assert PYTHON in read_value(hive, f"{CS}\\Services\\vmware-osam-firstboot", "ImagePath")
            firstboot = json.loads((root / CONFIG).read_text())
        # The static address goes to the NIC the VM definition gives the replica.
        assert [n["mac"] for n in firstboot["network"]] == [vm["nics"][0]["mac"]]
        assert firstboot["network"][0]["ipv4"] == [{"address": "192.0.2.10", "prefix": 24}]
    finally:
        release(source)
        if (replica_dir / "disks").exists():
            for image in (replica_dir / "disks").iterdir():
                release(image)


def test_without_a_pvscsi_driver_the_vm_definition_takes_lsi_sas(tmp_path):
    source = build_image(tmp_path, "gpt")
    replica_dir = tmp_path / "replicas" / "app01"
    try:
        inventory = windows_inventory(source.stat().st_size)
        replica_dir.mkdir(parents=True)
        replica = make_replica(BLOCK, str(replica_dir), str(tmp_path / "empty-cache"))
        replica.prepare("app01", inventory)
        replicate(source, replica, tmp_path / "sentinel-state", str(replica_dir / "checkpoint.json"))
        report = replica.fixup("app01", inventory)
        assert report["storage"] == "lsilogicsas"
        assert replica.vm()["storage"] == "lsilogicsas"
    finally:
        release(source)
        if (replica_dir / "disks").exists():
            for image in (replica_dir / "disks").iterdir():
                release(image)
