"""What the vSphere API simulator does through pyvmomi, the operations the receiver's vSphere side
will use: log in; find the datacenter, cluster, hosts, resource pool, datastores (and the local
folder behind one), port groups and the VM folder; create a VM on an existing flat disk
(pvscsi, vmxnet3 not connected), read the disk back through the datastore HTTP API, annotate
it, give it a custom field value, connect its NIC, power it on and off, find it by name and by
that field, destroy it.

Also on record, so product code knows what to fake or not to rely on: the operations the
simulator does not implement (test_unsupported_operation), where it is more lenient than
vCenter, and the answers scripts/build-vcsim.sh patches it to give.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("pyVmomi", reason="pyvmomi not installed: run scripts/setup.sh")

from pyVim.task import WaitForTask  # noqa: E402
from pyVmomi import vim, vmodl  # noqa: E402

from tests.vsphere.vcsim import Vcsim  # noqa: E402

DC, CLUSTER, STANDALONE, DATASTORE = "DC0", "DC0_C0", "DC0_H0", "LocalDS_0"
PORTGROUP, STANDARD_NETWORK = "DC0_DVPG0", "VM Network"
PRESET_VMS = {"DC0_H0_VM0", "DC0_H0_VM1", "DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1"}
VM_NAME = "osam-vm"
MAC = "00:50:56:3f:00:01"
FIELD = "osam.migration"
DISK_BYTES = 1 << 20


# ---------------------------------------------------------------- helpers
def find_child(parent_list, name: str, kind=None):
    hits = [e for e in parent_list if e.name == name and (kind is None or isinstance(e, kind))]
    assert len(hits) == 1, f"{name!r}: {len(hits)} matches among {[e.name for e in parent_list]}"
    return hits[0]


class Inventory:
    """The objects of the default inventory a VM creation needs, found by walking from the root."""

    def __init__(self, si):
        self.content = si.RetrieveContent()
        self.datacenter = find_child(self.content.rootFolder.childEntity, DC, vim.Datacenter)
        self.cluster = find_child(self.datacenter.hostFolder.childEntity, CLUSTER, vim.ClusterComputeResource)
        self.pool = self.cluster.resourcePool
        self.datastore = find_child(self.datacenter.datastore, DATASTORE, vim.Datastore)
        # dc.network can name a distributed port group twice (test_simulator_leniencies): dedupe.
        self.portgroup = next(n for n in self.datacenter.network
                              if isinstance(n, vim.dvs.DistributedVirtualPortgroup) and n.name == PORTGROUP)
        self.vm_folder = self.datacenter.vmFolder

    @property
    def local_folder(self) -> Path:
        """The local directory behind the datastore (a path on the simulator's machine)."""
        return Path(self.datastore.info.url)


def write_flat_disk(folder: Path, name: str, data: bytes) -> None:
    """A monolithic flat VMDK: the descriptor NAME.vmdk and its extent NAME-flat.vmdk."""
    assert len(data) % 512 == 0
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}-flat.vmdk").write_bytes(data)
    (folder / f"{name}.vmdk").write_text(
        "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=fffffffe\nparentCID=ffffffff\n"
        "createType=\"vmfs\"\n\n# Extent description\n"
        f"RW {len(data) // 512} VMFS \"{name}-flat.vmdk\"\n\n# The Disk Data Base\n#DDB\n\n"
        "ddb.adapterType = \"lsilogic\"\nddb.virtualHWVersion = \"13\"\n")


def vm_config(inv: Inventory, name: str, disk_capacity_kb: int) -> vim.vm.ConfigSpec:
    """A VM on the existing disk [datastore] NAME/NAME.vmdk: pvscsi, and a vmxnet3 NIC on the
    distributed port group that is not connected, neither now nor at power-on."""
    ds = inv.datastore.name
    scsi = vim.vm.device.ParaVirtualSCSIController(key=1000, busNumber=0, sharedBus="noSharing")
    disk = vim.vm.device.VirtualDisk(
        key=2000, controllerKey=scsi.key, unitNumber=0, capacityInKB=disk_capacity_kb,
        backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
            fileName=f"[{ds}] {name}/{name}.vmdk", diskMode="persistent", thinProvisioned=False))
    nic = vim.vm.device.VirtualVmxnet3(
        key=4000, addressType="manual", macAddress=MAC,
        backing=vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
            port=vim.dvs.PortConnection(portgroupKey=inv.portgroup.key,
                                        switchUuid=inv.portgroup.config.distributedVirtualSwitch.uuid)),
        connectable=vim.vm.device.VirtualDevice.ConnectInfo(startConnected=False, connected=False,
                                                            allowGuestControl=True))
    # No fileOperation on the disk: it exists; the VM only refers to it.
    changes = [vim.vm.device.VirtualDeviceSpec(operation="add", device=d) for d in (scsi, disk, nic)]
    return vim.vm.ConfigSpec(name=name, guestId="debian12_64Guest", numCPUs=2, memoryMB=1024, firmware="bios",
                             files=vim.vm.FileInfo(vmPathName=f"[{ds}] {name}/{name}.vmx"),
                             deviceChange=changes)


def create_vm(si, name: str = VM_NAME, data: bytes | None = None):
    inv = Inventory(si)
    data = os.urandom(DISK_BYTES) if data is None else data
    write_flat_disk(inv.local_folder / name, name, data)
    task = inv.vm_folder.CreateVM_Task(config=vm_config(inv, name, len(data) // 1024), pool=inv.pool)
    WaitForTask(task)
    return task.info.result


def devices(vm, kind) -> list:
    return [d for d in vm.config.hardware.device if isinstance(d, kind)]


def vms_with_field_value(si, field_name: str, value: str) -> list:
    """The VMs whose custom field FIELD_NAME is VALUE, in one property collector call."""
    content = si.RetrieveContent()
    key = next(f.key for f in content.customFieldsManager.field if f.name == field_name)
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        pc = vmodl.query.PropertyCollector
        spec = pc.FilterSpec(
            objectSet=[pc.ObjectSpec(obj=view, skip=True, selectSet=[
                pc.TraversalSpec(name="view", path="view", skip=False, type=vim.view.ContainerView)])],
            propSet=[pc.PropertySpec(type=vim.VirtualMachine, pathSet=["customValue"])])
        result = content.propertyCollector.RetrievePropertiesEx([spec], pc.RetrieveOptions())
    finally:
        view.Destroy()
    found = []
    for obj in result.objects if result else ():
        values = [v for prop in obj.propSet or () for v in prop.val or ()]
        if any(v.key == key and v.value == value for v in values):
            found.append(obj.obj)
    return found


def vms_named(si, name: str) -> list:
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        return [vm for vm in view.view if vm.name == name]
    finally:
        view.Destroy()


# ---------------------------------------------------------------- log in, inventory (shared simulator)
def test_login(vcsim):
    assert vcsim.url == f"https://127.0.0.1:{vcsim.port}/sdk" and vcsim.host == "127.0.0.1"
    si = vcsim.connect()
    content = si.RetrieveContent()
    assert content.about.apiType == "VirtualCenter"
    assert content.sessionManager.currentSession.userName == vcsim.user
    assert si._stub.version == "vim.version.v8_0_2_0"   # what pyvmomi negotiated


def test_wrong_password_is_refused(vcsim):
    with pytest.raises(vim.fault.InvalidLogin):
        vcsim.connect(password=vcsim.password + "-wrong")


def test_inventory(vcsim):
    si = vcsim.connect()
    inv = Inventory(si)
    assert [h.name for h in inv.cluster.host] == ["DC0_C0_H0", "DC0_C0_H1", "DC0_C0_H2"]
    assert all(h.runtime.connectionState == "connected" for h in inv.cluster.host)
    standalone = find_child(inv.datacenter.hostFolder.childEntity, STANDALONE, vim.ComputeResource)
    assert [h.name for h in standalone.host] == [STANDALONE]
    assert inv.pool.name == "Resources" and inv.pool.owner == inv.cluster

    ds = inv.datastore
    assert ds.summary.accessible and ds.summary.capacity > 0
    assert ds.info.url == ds.summary.url
    assert inv.local_folder.is_dir() and inv.local_folder.parent == vcsim.datastore_root
    # Which hosts see it: ask the hosts (test_simulator_leniencies: ds.host names only one).
    assert all(ds in h.datastore for h in inv.cluster.host) and ds in inv.cluster.datastore

    networks = {(type(n).__name__, n.name) for n in inv.datacenter.network}
    assert ("vim.Network", STANDARD_NETWORK) in networks
    assert ("vim.dvs.DistributedVirtualPortgroup", PORTGROUP) in networks
    assert inv.portgroup.config.distributedVirtualSwitch.name == "DVS0"
    assert inv.portgroup.key.startswith("dvportgroup-")

    assert inv.vm_folder.name == "vm"
    assert {vm.name for vm in inv.vm_folder.childEntity} >= PRESET_VMS


# ---------------------------------------------------------------- a VM of our own (one simulator for the module)
@pytest.fixture(scope="module")
def created(module_vcsim):
    """The module's VM on its flat disk, and the disk's bytes."""
    si = module_vcsim.connect()
    data = os.urandom(DISK_BYTES)
    vm = create_vm(si, VM_NAME, data)
    return si, vm, data


def test_create_vm_on_existing_flat_disk(created):
    si, vm, data = created
    inv = Inventory(si)
    assert vm.name == VM_NAME and vm.parent == inv.vm_folder and vm.resourcePool == inv.pool
    assert vm.config.files.vmPathName == f"[{DATASTORE}] {VM_NAME}/{VM_NAME}.vmx"
    assert vm.config.guestId == "debian12_64Guest" and vm.config.hardware.numCPU == 2
    assert vm.runtime.powerState == "poweredOff"

    [scsi] = devices(vm, vim.vm.device.ParaVirtualSCSIController)
    [disk] = devices(vm, vim.vm.device.VirtualDisk)
    assert disk.controllerKey == scsi.key and disk.unitNumber == 0 and scsi.busNumber == 0
    assert disk.backing.fileName == f"[{DATASTORE}] {VM_NAME}/{VM_NAME}.vmdk"
    assert disk.capacityInKB == len(data) // 1024

    [nic] = devices(vm, vim.vm.device.VirtualVmxnet3)
    assert nic.macAddress == MAC
    assert nic.backing.port.portgroupKey == inv.portgroup.key
    assert (nic.connectable.startConnected, nic.connectable.connected) == (False, False)

    # The VM's files beside the disk, in the datastore's local folder; the disk is untouched.
    folder = inv.local_folder / VM_NAME
    assert {f"{VM_NAME}.vmx", f"{VM_NAME}.vmdk", f"{VM_NAME}-flat.vmdk"} <= set(os.listdir(folder))
    assert (folder / f"{VM_NAME}-flat.vmdk").read_bytes() == data


def test_flat_disk_bytes_through_datastore_http(created, module_vcsim):
    si, _, data = created
    url = module_vcsim.datastore_url(f"{VM_NAME}/{VM_NAME}-flat.vmdk", DC, DATASTORE)
    status, body = module_vcsim.http("GET", url, si)
    assert status == 200
    assert body == data


def test_annotation_and_custom_field(created):
    si, vm, _ = created
    WaitForTask(vm.ReconfigVM_Task(vim.vm.ConfigSpec(annotation="migrated by vmware.osam\nwave 1")))
    assert vm.config.annotation == "migrated by vmware.osam\nwave 1"

    cfm = si.RetrieveContent().customFieldsManager
    field = cfm.AddCustomFieldDef(name=FIELD, moType=vim.VirtualMachine)
    assert field.type is str   # "string", as vCenter says (patched)
    vm.setCustomValue(key=FIELD, value="mig-0001")
    cfm.SetField(entity=vm, key=field.key, value="mig-0002")
    # One value per field, the last one (patched: vcsim kept both).
    assert [(v.key, v.value) for v in vm.customValue] == [(field.key, "mig-0002")]
    assert vms_with_field_value(si, FIELD, "mig-0002") == [vm]
    assert vms_with_field_value(si, FIELD, "mig-0001") == []


def test_connect_nic(created):
    _, vm, _ = created
    [nic] = devices(vm, vim.vm.device.VirtualVmxnet3)
    nic.connectable.startConnected = True
    nic.connectable.connected = True
    WaitForTask(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[
        vim.vm.device.VirtualDeviceSpec(operation="edit", device=nic)])))
    [nic] = devices(vm, vim.vm.device.VirtualVmxnet3)
    assert (nic.connectable.startConnected, nic.connectable.connected) == (True, True)
    assert nic.macAddress == MAC


def test_power_on_off(created):
    _, vm, _ = created
    WaitForTask(vm.PowerOnVM_Task())
    assert vm.runtime.powerState == "poweredOn"
    WaitForTask(vm.PowerOffVM_Task())
    assert vm.runtime.powerState == "poweredOff"


def test_find_by_name(created):
    si, vm, _ = created
    content = si.RetrieveContent()
    assert content.searchIndex.FindByInventoryPath(f"{DC}/vm/{VM_NAME}") == vm
    assert content.searchIndex.FindChild(Inventory(si).vm_folder, VM_NAME) == vm
    assert vms_named(si, VM_NAME) == [vm]
    assert content.searchIndex.FindByInventoryPath(f"{DC}/vm/no-such-vm") is None


def test_unset_property_reads_as_none(created):
    # pyvmomi reads each property with PropertyCollector.Fetch; an unset one must come back
    # unset, not as a failed request (patched).
    _, vm, _ = created
    assert vm.snapshot is None
    assert vm.parentVApp is None


def test_destroy_vm(new_vcsim):
    sim = new_vcsim()
    si = sim.connect()
    vm = create_vm(si, "osam-doomed")
    folder = Inventory(si).local_folder / "osam-doomed"
    WaitForTask(vm.Destroy_Task())
    assert vms_named(si, "osam-doomed") == []
    assert si.RetrieveContent().searchIndex.FindByInventoryPath(f"{DC}/vm/osam-doomed") is None
    # As on vCenter, destroying a VM deletes its files, the disks it refers to included.
    assert not folder.exists()


# ---------------------------------------------------------------- what the simulator does not do
UNSUPPORTED = {
    # method: (how to call it on the shared simulator, the managed object type that answers)
    "UpgradeTools_Task": (lambda content, vm: vm.UpgradeTools_Task(), "VirtualMachine"),
    "MountToolsInstaller": (lambda content, vm: vm.MountToolsInstaller(), "VirtualMachine"),
    "RebootGuest": (lambda content, vm: vm.RebootGuest(), "VirtualMachine"),
    "LogUserEvent": (lambda content, vm: content.eventManager.LogUserEvent(entity=vm, msg="osam"), "EventManager"),
    "CreateCollectorForTasks": (lambda content, vm: content.taskManager.CreateCollectorForTasks(
        vim.TaskFilterSpec(entity=vim.TaskFilterSpec.ByEntity(entity=vm, recursion="self"))), "TaskManager"),
}


@pytest.mark.parametrize("method", sorted(UNSUPPORTED))
def test_unsupported_operation(vcsim, method):
    """The simulator answers these with MethodNotFound: product code must fake them in tests.
    A failure here means the simulator learnt the method: drop the fake."""
    call, answering_type = UNSUPPORTED[method]
    si = vcsim.connect()
    content = si.RetrieveContent()
    vm = content.searchIndex.FindByInventoryPath(f"{DC}/vm/DC0_H0_VM0")
    with pytest.raises(vmodl.fault.MethodNotFound) as raised:
        call(content, vm)
    fault = raised.value
    receiver = fault.receiver
    assert fault.method == method
    assert receiver._wsdlName == answering_type
    assert fault.msg == f"{answering_type}:{receiver._moId} does not implement: {method}"


# ---------------------------------------------------------------- where it differs from vCenter
def test_simulator_leniencies(new_vcsim):
    """Known differences from vCenter; product tests must not count on vCenter's behaviour here."""
    sim = new_vcsim(vm=0)
    si = sim.connect()
    inv = Inventory(si)
    (inv.local_folder / "probe.bin").write_bytes(b"x" * 512)
    url = sim.datastore_url("probe.bin", DC, DATASTORE)
    # 1. The datastore HTTP API does not ask for a session (vCenter answers 401 Unauthorized).
    assert sim.http("GET", url) == (200, b"x" * 512)
    # 2. dc.network lists the distributed port group twice: dedupe by managed object id.
    listed = [n._moId for n in inv.datacenter.network if n.name == PORTGROUP]
    assert len(listed) == 2 and len(set(listed)) == 1
    # 3. The DVS's uplink port group is not marked as one (vCenter: config.uplink true and the
    #    SYSTEM/DVS.UPLINKPG tag): pick port groups by name, not by "not an uplink".
    uplinks = [n for n in inv.datacenter.network if n.name.startswith("DVS0-DVUplinks")]
    assert len(uplinks) == 1 and not uplinks[0].config.uplink and not uplinks[0].tag
    # 4. Datastore.host names only the last host that mounted it (vCenter: every host that
    #    does): ask HostSystem.datastore or ComputeResource.datastore instead.
    assert [m.key.name for m in inv.datastore.host] == ["DC0_C0_H2"]
    # 5. ShutdownGuest needs no running VMware Tools (vCenter: ToolsUnavailable): it powers off.
    vm = create_vm(si, "osam-shutdown")
    WaitForTask(vm.PowerOnVM_Task())
    assert vm.guest.toolsRunningStatus == "guestToolsNotRunning"
    vm.ShutdownGuest()
    assert vm.runtime.powerState == "poweredOff"


def test_datastore_http_put(new_vcsim):
    """The datastore HTTP API takes uploads: PUT writes the file into the local folder."""
    sim = new_vcsim(vm=0)
    si = sim.connect()
    data = os.urandom(64 * 1024)
    status, _ = sim.http("PUT", sim.datastore_url("uploads/disk-flat.vmdk", DC, DATASTORE), si, data)
    assert status == 200
    assert (Inventory(si).local_folder / "uploads" / "disk-flat.vmdk").read_bytes() == data


def test_task_of_a_non_entity_has_no_entity(new_vcsim):
    """A FileManager task reads back with entity unset, as on vCenter (patched)."""
    sim = new_vcsim(vm=0)
    si = sim.connect()
    inv = Inventory(si)
    (inv.local_folder / "scratch.txt").write_text("scratch\n")
    task = si.RetrieveContent().fileManager.DeleteDatastoreFile_Task(
        name=f"[{DATASTORE}] scratch.txt", datacenter=inv.datacenter)
    WaitForTask(task)
    assert task.info.state == "success"
    assert task.info.entity is None and task.info.entityName is None
    assert not (inv.local_folder / "scratch.txt").exists()


# ---------------------------------------------------------------- the fixture's own promises
def test_stop_removes_everything(vcsim_binary, tmp_path):
    sim = Vcsim(vcsim_binary, tmp_path, ds=2, vm=0)
    try:
        sim.start()
        assert sim.start_seconds < 5, f"start took {sim.start_seconds:.2f}s"
        assert len(os.listdir(sim.datastore_root)) == 2   # one folder per datastore
        assert sim.connect().RetrieveContent().about.apiType == "VirtualCenter"
    finally:
        leftovers = sim.stop()
    assert not sim.running() and sim.returncode == 0   # a clean exit on SIGTERM
    assert leftovers == []
    assert sim.stop() == []   # idempotent
