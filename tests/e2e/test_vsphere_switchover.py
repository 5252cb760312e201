"""A migration into vSphere, end to end: real sentinel, gateway and receiver processes, a disk
replica written straight into the datastore as the VM's flat extents, and the VM made, cut
over and checked through pyvmomi against the vSphere API simulator (vcsim). The datastore is
a local folder of the simulator's, which is what the receiver's `datastore_path` stands for.

The source is a loop disk holding data, not an OS, so the receiver runs with --no-fixup (the
fix-up has its own proof in test_linux_boot.py); its sentinel stands in for the machine and
stops when told to power it off."""
from __future__ import annotations

import hashlib
import json

import pytest
from pyVmomi import vim

from tests.e2e.site import wait_for
from tests.util.trees import make_rich_tree
from tests.vsphere.conftest import new_vcsim, vcsim_binary  # noqa: F401 - fixtures used below

pytestmark = [pytest.mark.need_root, pytest.mark.e2e, pytest.mark.vcsim, pytest.mark.slow]

DC, CLUSTER, DATASTORE, PORT_GROUP = "DC0", "DC0_C0", "LocalDS_0", "VM Network"
CUTOVER = ["fixup", "replica_vm", "tools", "replica_on", "source_off", "network", "completed"]


def datastore_folder(si) -> str:
    dc = si.RetrieveContent().searchIndex.FindByInventoryPath(DC)
    return next(ds for ds in dc.datastore if ds.name == DATASTORE).info.url


def vms_named(si, name):
    view = si.RetrieveContent().viewManager.CreateContainerView(si.RetrieveContent().rootFolder,
                                                               [vim.VirtualMachine], True)
    try:
        return [vm for vm in view.view if vm.name == name]
    finally:
        view.Destroy()


def first_mib_sha(data: bytes) -> str:
    return hashlib.sha256(data[:1 << 20]).hexdigest()


def test_a_guest_migrated_into_vsphere_runs_there_as_its_replica(site, source_disk, new_vcsim, disk_tmp_path):
    src, loop = source_disk
    (src / "etc").mkdir()
    (src / "etc" / "hostname").write_text("vmsrc\n")
    make_rich_tree(src / "data")
    sim = new_vcsim()
    si = sim.connect()
    before = len(vms_named(si, "vmsrc"))
    password = disk_tmp_path / "vcenter.password"
    password.write_text(sim.password + "\n")
    password.chmod(0o600)
    config = disk_tmp_path / "vsphere.json"
    config.write_text(json.dumps({
        "url": f"https://{sim.host}:{sim.port}", "user": sim.user, "password_file": str(password),
        "insecure": True, "datacenter": DC, "cluster": CLUSTER, "datastore": DATASTORE,
        "datastore_path": datastore_folder(si), "networks": {"*": PORT_GROUP}}))

    site.start_receiver(replica_format="disk", extra=["--no-fixup", "--vsphere-config", config,
                                                      "--source-off-timeout", "60"])
    site.start_gateway()
    site.start_sentinel("vmsrc", src)
    wait_for(lambda: site.guest("vmsrc"), 30, "the guest to register")
    inventory = site.guest("vmsrc")["inventory"]
    assert site.osamctl("migrate", "vmsrc", "--switchover", "immediate").returncode == 0
    done = site.wait_phase("vmsrc", "completed", 240)
    assert [h["to"] for h in done["history"]] == [
        "registered", "full_sync", "continuous_sync", "quiesce", "final_sync", *CUTOVER]

    # One VM, named after the source, shaped like it, on VMware's virtual hardware, running.
    assert before == 0
    (vm,) = vms_named(si, "vmsrc")
    assert vm.runtime.powerState == "poweredOn"
    assert vm.config.hardware.numCPU == inventory["cpus"]["count"]
    assert vm.config.hardware.memoryMB * (1 << 20) >= inventory["memory"]
    assert vm.config.firmware == "bios"
    devices = vm.config.hardware.device
    assert len([d for d in devices if isinstance(d, vim.vm.device.ParaVirtualSCSIController)]) == 1
    disks = [d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)]
    nics = [d for d in devices if isinstance(d, vim.vm.device.VirtualVmxnet3)]
    assert len(disks) == len(inventory["layout"]["disks"]) == 1
    assert disks[0].backing.fileName == f"[{DATASTORE}] vmsrc/vmsrc_0.vmdk"
    vm_def = json.loads((site.data / "replicas" / "vmsrc" / "vm.json").read_text())
    assert [n.macAddress for n in nics] == [n["mac"] for n in vm_def["nics"]] and nics
    assert all(n.connectable.connected and n.connectable.startConnected for n in nics)
    assert str(done["id"]) in (vm.config.annotation or "")

    # The flat extent the VM's disk points at holds the replica's bytes: the source's layout.
    status, flat = sim.http("GET", sim.datastore_url("vmsrc/vmsrc_0-flat.vmdk", DC, DATASTORE), si)
    assert status == 200
    with open(vm_def["disks"][0]["image"], "rb") as f:
        assert first_mib_sha(flat) == first_mib_sha(f.read(1 << 20))
    with open(loop, "rb") as f:     # the partition table region (the disk GUIDs live there)
        assert flat[512:1024] == f.read(1024)[512:]

    # The source's sentinel was told to power its machine off, and did.
    wait_for(lambda: not site.sentinels["vmsrc"].running, 10, "the source to stop")
    assert not (site.data / "replicas" / "vmsrc" / "root").is_mount()


def test_a_destination_that_cannot_take_the_guest_fails_it_before_anything_is_made(site, source_disk, new_vcsim,
                                                                                    disk_tmp_path):
    src, _ = source_disk
    sim = new_vcsim()
    si = sim.connect()
    config = disk_tmp_path / "vsphere.json"
    config.write_text(json.dumps({
        "url": f"https://{sim.host}:{sim.port}", "user": sim.user, "password": sim.password, "insecure": True,
        "datacenter": DC, "cluster": CLUSTER, "datastore": "LocalDS_9", "datastore_path": datastore_folder(si),
        "networks": {"*": "no-such-port-group"}}))
    site.start_receiver(replica_format="disk", extra=["--no-fixup", "--vsphere-config", config])
    site.start_gateway()
    site.start_sentinel("refused", src)
    wait_for(lambda: site.guest("refused"), 30, "the guest to register")
    assert site.osamctl("migrate", "refused", "--switchover", "immediate").returncode == 0
    m = site.wait_phase("refused", "failed", 60)
    assert "LocalDS_9" in m["reason"] and "no-such-port-group" in m["reason"], m["reason"]
    assert sim.password not in m["reason"] and sim.password not in site.dump_logs()
    assert [h["to"] for h in m["history"]] == ["registered", "failed"]
    assert not (site.data / "replicas" / "refused" / "disks").exists(), "nothing made"


def test_a_source_that_is_a_vsphere_vm_is_powered_off_through_its_vcenter(site, source_disk, new_vcsim, disk_tmp_path):
    """The source is the simulator's VM DC0_H0_VM0 (found by the guest's host name), the
    destination datacenter DC1 of the same simulator."""
    src, _ = source_disk
    (src / "etc").mkdir()
    (src / "etc" / "hostname").write_text("DC0_H0_VM0\n")
    sim = new_vcsim(dc=2)
    si = sim.connect()
    dc1 = si.RetrieveContent().searchIndex.FindByInventoryPath("DC1")
    (source_vm,) = vms_named(si, "DC0_H0_VM0")
    assert source_vm.runtime.powerState == "poweredOn"
    connection = {"url": f"https://{sim.host}:{sim.port}", "user": sim.user, "password": sim.password,
                  "insecure": True}
    config = disk_tmp_path / "vsphere.json"
    config.write_text(json.dumps(dict(connection, datacenter="DC1", cluster="DC1_C0", datastore=DATASTORE,
                                      datastore_path=next(ds for ds in dc1.datastore).info.url,
                                      networks={"*": PORT_GROUP}, source=dict(connection, datacenter="DC0"))))
    site.start_receiver(replica_format="disk", extra=["--no-fixup", "--vsphere-config", config,
                                                      "--source-off-timeout", "60"])
    site.start_gateway()
    site.start_sentinel("vm0", src)
    wait_for(lambda: site.guest("vm0"), 30, "the guest to register")
    assert site.osamctl("migrate", "vm0", "--switchover", "immediate").returncode == 0
    done = site.wait_phase("vm0", "completed", 240)
    assert [h["to"] for h in done["history"]][-7:] == CUTOVER
    assert source_vm.runtime.powerState == "poweredOff"
    replicas = [vm for vm in vms_named(si, "DC0_H0_VM0") if vm != source_vm]
    assert len(replicas) == 1 and replicas[0].runtime.powerState == "poweredOn"
    assert site.sentinels["vm0"].running, "the vCenter powered the source off, not its sentinel"
    assert "source VM 'DC0_H0_VM0'" in site.receiver.log()
