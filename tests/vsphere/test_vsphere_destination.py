"""The vsphere destination (osam.destinations.vsphere) against the vSphere API simulator, with
real pyvmomi calls: its configuration file, validation (every problem reported, nothing
created), the replica VM made on the receiver's images and found again, NIC and power
control, the VMware Tools step, a dropped session, and powering off a source VM through a
source vCenter.

The simulator does not offer MountToolsInstaller (tests/vsphere/test_vcsim.py), so the
Windows tools step can only show the "not offered" answer here.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

pytest.importorskip("pyVmomi", reason="pyvmomi not installed: run scripts/setup.sh")

from pyVmomi import vim  # noqa: E402

from osam.destinations.base import OFF, ON, DestinationError, DiskSpec, NicSpec, VmSpec  # noqa: E402
from osam.destinations.vsphere import VsphereConfig, VsphereDestination, VsphereSource  # noqa: E402
from osam.destinations.vsphere_config import VsphereConfigError  # noqa: E402
from osam.destinations.vsphere_guest import guest_id  # noqa: E402
from osam.destinations.vsphere_inventory import MIGRATION_FIELD, retrieve  # noqa: E402
from osam.destinations.vsphere_vmspec import disk_slot, memory_mb  # noqa: E402

DC, CLUSTER, STANDALONE, DATASTORE = "DC0", "DC0_C0", "DC0_H0", "LocalDS_0"
DVPG, STANDARD = "DC0_DVPG0", "VM Network"
PRESET_VM = "DC0_H0_VM0"
MIB, GIB = 1 << 20, 1 << 30
SECRET = "s3cr3t-Pa55word"


# ---------------------------------------------------------------- helpers
def datastore_folder(sim) -> str:
    si = sim.connect()
    dc = si.RetrieveContent().searchIndex.FindByInventoryPath(DC)
    return next(ds for ds in dc.datastore if ds.name == DATASTORE).info.url


def site_config(sim, tmp_path: Path, **changes) -> dict:
    """A destination configuration for the simulator's default inventory, as JSON data."""
    password_file = tmp_path / "vcenter.password"
    password_file.write_text(sim.password + "\n")
    password_file.chmod(0o600)
    config = {"url": f"https://{sim.host}:{sim.port}", "user": sim.user, "password_file": str(password_file),
              "insecure": True, "datacenter": DC, "cluster": CLUSTER, "datastore": DATASTORE,
              "datastore_path": datastore_folder(sim), "networks": {"eth0": DVPG, "*": STANDARD}}
    config.update(changes)
    return {k: v for k, v in config.items() if v is not None}


def destination(sim, tmp_path: Path, **changes) -> VsphereDestination:
    path = tmp_path / "vsphere.json"
    path.write_text(json.dumps(site_config(sim, tmp_path, **changes)))
    return VsphereDestination(VsphereConfig.load(str(path)))


def vm_spec(name: str = "web01", migration_id: str = "mig-0001", disks=(MIB, 2 * MIB), os_info=None,
            firmware: str = "uefi", nics=None) -> VmSpec:
    if nics is None:
        nics = [NicSpec("00:50:56:01:00:01", "eth0", "52:54:00:00:00:01"),
                NicSpec("00:50:56:01:00:02", "eth1", "52:54:00:00:00:02")]
    return VmSpec(name=name, migration_id=migration_id, cpus=2, memory=1536 * MIB, firmware=firmware,
                  os=os_info if os_info is not None else {"id": "debian", "version_id": "12"},
                  disks=[DiskSpec(f"sd{chr(97 + i)}", size, "") for i, size in enumerate(disks)], nics=nics)


def write_images(dest: VsphereDestination, spec: VmSpec) -> list:
    """What the receiver does: each disk's raw image in the VM's datastore folder. Returns the bytes."""
    os.makedirs(dest.image_dir(spec), exist_ok=True)
    contents = []
    for i, disk in enumerate(spec.disks):
        disk.image = dest.flat_path(spec, i)
        pattern = f"{spec.name} disk {i} ".encode()
        data = (pattern * (disk.size // len(pattern) + 1))[:disk.size]
        Path(disk.image).write_bytes(data)
        contents.append(data)
    return contents


def all_vms(si) -> list:
    content = si.RetrieveContent()
    return sorted(vm._moId for vm, _ in retrieve(content, content.rootFolder, vim.VirtualMachine, ["name"]))


def vm_object(si, ref):
    return vim.VirtualMachine(ref.id, si._stub)


def devices(vm, kind) -> list:
    return [d for d in vm.config.hardware.device if isinstance(d, kind)]


# ---------------------------------------------------------------- configuration
def test_config_loads(tmp_path):
    (tmp_path / "pw").write_text(SECRET + "\n")
    (tmp_path / "pw").chmod(0o600)
    (tmp_path / "ca.pem").write_text("not read before a connection\n")
    path = tmp_path / "vsphere.json"
    path.write_text(json.dumps({
        "url": "https://vcenter.example.com:8443/sdk", "user": "osam@vsphere.local", "password_file": "pw",
        "ca_file": "ca.pem", "datacenter": "DC0", "host": "esx01", "resource_pool": "/Resources/Web/",
        "folder": "Migrated/Wave 1", "datastore": "nfs01", "datastore_path": "/mnt/nfs01/",
        "networks": {"eth0": "Prod", "52:54:00:AB:CD:EF": "Backup", "*": "VM Network"},
        "source": {"url": "https://old-vc.example.com", "user": "ro", "password": SECRET, "insecure": True}}))
    config = VsphereConfig.load(str(path))
    c = config.connection
    assert (c.host, c.port, c.user, c.ca_file, c.insecure) == (
        "vcenter.example.com", 8443, "osam@vsphere.local", str(tmp_path / "ca.pem"), False)
    assert c.password.reveal() == SECRET and c.task_timeout == 600
    assert (config.cluster, config.host, config.resource_pool, config.folder) == (
        None, "esx01", "Resources/Web", "Migrated/Wave 1")
    assert config.datastore_path == "/mnt/nfs01"
    assert config.port_group_for("eth0", "") == "Prod"
    assert config.port_group_for("eth7", "52:54:00:ab:cd:ef") == "Backup"
    assert config.port_group_for("eth7", "52:54:00:AB:CD:EF") == "Backup"
    assert config.port_group_for("eth9", "") == "VM Network"
    assert config.source.connection.host == "old-vc.example.com" and config.source.connection.insecure
    assert config.source.datacenter is None
    for text in (repr(config), str(config), repr(c), repr(config.source), repr(c.password), str(c.password)):
        assert SECRET not in text
    assert "hidden" in repr(c.password)


BROKEN = {
    # what is wrong: (the file's content, the words the message must hold)
    "missing keys": ({"url": "https://vc", "password": SECRET},
                     ["'user' is missing", "'datacenter' is missing", "'datastore' is missing",
                      "'datastore_path' is missing", "exactly one of 'cluster' and 'host'"]),
    "both cluster and host": ({"cluster": "C", "host": "H"}, ["exactly one of 'cluster' and 'host'"]),
    "both passwords": ({"password_file": "/nonexistent"}, ["exactly one of 'password' and 'password_file'"]),
    "http url": ({"url": "http://vc.example.com"}, ["'url' must be https://host[:port]"]),
    "credentials in the url": ({"url": f"https://admin:{SECRET}@vc.example.com"}, ["must not hold credentials"]),
    "url with a path": ({"url": "https://vc.example.com/ui"}, ["'url' must be https://host[:port]"]),
    "unknown key": ({"pasword": SECRET}, ["unknown key 'pasword'"]),
    "relative datastore_path": ({"datastore_path": "mnt/ds"}, ["'datastore_path' must be an absolute path"]),
    "insecure and a CA": ({"insecure": True, "ca_file": "/etc/hostname"}, ["exclude each other"]),
    "insecure not a bool": ({"insecure": "yes"}, ["'insecure' must be true or false"]),
    "bad networks": ({"networks": ["VM Network"]}, ["'networks' must be an object"]),
    "bad timeout": ({"task_timeout": 0}, ["'task_timeout' must be a positive number"]),
    "bad source": ({"source": {"url": "https://vc2", "user": "u", "password": SECRET, "colour": 1}},
                   ["unknown key 'source.colour'"]),
    "source without password": ({"source": {"url": "https://vc2", "user": "u"}},
                                ["exactly one of 'source.password' and 'source.password_file'"]),
}
VALID = {"url": "https://vc.example.com", "user": "u", "password": SECRET, "datacenter": "DC0",
         "cluster": "C0", "datastore": "ds", "datastore_path": "/mnt/ds"}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_config_errors_name_the_problem_never_the_password(tmp_path, case):
    changes, expected = BROKEN[case]
    data = changes if case == "missing keys" else dict(VALID, **changes)
    path = tmp_path / "vsphere.json"
    path.write_text(json.dumps(data))
    with pytest.raises(VsphereConfigError) as raised:
        VsphereConfig.load(str(path))
    message = str(raised.value)
    assert message.startswith(f"vsphere config {path}: ")
    for words in expected:
        assert words in message
    assert SECRET not in message and SECRET not in repr(raised.value)
    assert isinstance(raised.value, DestinationError)


def test_config_file_errors(tmp_path):
    with pytest.raises(VsphereConfigError, match="cannot read it"):
        VsphereConfig.load(str(tmp_path / "absent.json"))
    (tmp_path / "bad.json").write_text("{url: ")
    with pytest.raises(VsphereConfigError, match="not valid JSON"):
        VsphereConfig.load(str(tmp_path / "bad.json"))
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(VsphereConfigError, match="must hold a JSON object"):
        VsphereConfig.load(str(tmp_path / "list.json"))
    (tmp_path / "empty.password").write_text("\n")
    data = dict(VALID)
    del data["password"]
    data["password_file"] = "empty.password"
    (tmp_path / "c.json").write_text(json.dumps(data))
    with pytest.raises(VsphereConfigError, match="empty.password is empty"):
        VsphereConfig.load(str(tmp_path / "c.json"))


def test_wrong_password_is_a_problem_without_the_password(vcsim, tmp_path):
    config = VsphereConfig.from_dict(dict(site_config(vcsim, tmp_path, password_file=None), password=SECRET))
    dest = VsphereDestination(config)
    try:
        problems = dest.validate(vm_spec())
        assert any("login refused (wrong user or password)" in p for p in problems), problems
        with pytest.raises(DestinationError) as raised:
            dest.ensure_vm(vm_spec())
        assert "login refused" in str(raised.value)
        assert all(SECRET not in text for text in problems + [str(raised.value), repr(raised.value), repr(dest),
                                                              repr(dest.session), repr(config)])
    finally:
        dest.close()


# ---------------------------------------------------------------- names, descriptor, tables (no simulator)
def test_file_names_and_descriptor(tmp_path):
    config = VsphereConfig.from_dict(dict(VALID, datastore_path=str(tmp_path)))
    dest = VsphereDestination(config)
    spec = vm_spec(name="web 01.example", disks=(8 * GIB, MIB))
    assert dest.image_dir(spec) == str(tmp_path / "web_01.example")
    assert dest.flat_path(spec, 1) == str(tmp_path / "web_01.example" / "web_01.example_1-flat.vmdk")
    assert dest.descriptor_path(spec, 0) == str(tmp_path / "web_01.example" / "web_01.example_0.vmdk")
    with pytest.raises(DestinationError, match="no image at"):
        dest.write_descriptor(spec, 0)
    os.makedirs(dest.image_dir(spec))
    with open(dest.flat_path(spec, 0), "wb") as f:
        f.truncate(8 * GIB - 512)
    with pytest.raises(DestinationError, match="holds 8589934080 bytes, the disk has 8589934592"):
        dest.write_descriptor(spec, 0)
    with open(dest.flat_path(spec, 0), "wb") as f:
        f.truncate(8 * GIB)
    assert dest.write_descriptor(spec, 0) == "[ds] web_01.example/web_01.example_0.vmdk"

    text = Path(dest.descriptor_path(spec, 0)).read_text()
    assert text.startswith("# Disk DescriptorFile\nversion=1\n")
    fields = dict(re.findall(r'^(\S+?)\s*=\s*"?([^"\n]*)"?$', text, re.MULTILINE))
    assert fields["createType"] == "vmfs" and fields["parentCID"] == "ffffffff"
    assert re.fullmatch(r"[0-9a-f]{8}", fields["CID"]) and fields["CID"] != "ffffffff"
    assert fields["ddb.longContentID"].endswith(fields["CID"]) and len(fields["ddb.longContentID"]) == 32
    assert '\nRW 16777216 VMFS "web_01.example_0-flat.vmdk"\n' in text
    assert (fields["ddb.geometry.heads"], fields["ddb.geometry.sectors"]) == ("255", "63")
    assert fields["ddb.geometry.cylinders"] == str(16777216 // (255 * 63))
    assert fields["ddb.adapterType"] == "lsilogic"
    assert re.fullmatch(r"60 00 c2( [0-9a-f]{2}){5}-[0-9a-f]{2}( [0-9a-f]{2}){7}", fields["ddb.uuid"])
    # Stable: writing it again changes nothing; another migration gets other ids.
    mtime = os.stat(dest.descriptor_path(spec, 0)).st_mtime_ns
    dest.write_descriptor(spec, 0)
    assert os.stat(dest.descriptor_path(spec, 0)).st_mtime_ns == mtime
    other = vm_spec(name="web 01.example", migration_id="mig-other", disks=(8 * GIB,))
    dest.write_descriptor(other, 0)
    assert Path(dest.descriptor_path(spec, 0)).read_text() != text


@pytest.mark.parametrize("os_info, expected", [
    ({"id": "debian", "version_id": "12"}, "debian12_64Guest"),
    ({"id": "debian", "version_id": "13"}, "debian12_64Guest"),
    ({"id": "debian", "version_id": "11"}, "debian11_64Guest"),
    ({"id": "rhel", "version_id": "9.4"}, "rhel9_64Guest"),
    ({"id": "centos", "version_id": "8"}, "centos8_64Guest"),
    ({"id": "sles", "version_id": "15-SP5"}, "sles15_64Guest"),
    ({"id": "ubuntu", "version_id": "24.04"}, "ubuntu64Guest"),
    ({"id": "rocky", "version_id": "9.3"}, "rockylinux_64Guest"),
    ({"id": "linuxmint", "version_id": "21", "id_like": ["ubuntu", "debian"]}, "ubuntu64Guest"),
    ({"id": "gentoo"}, "otherLinux64Guest"),
    ({}, "otherLinux64Guest"),
    ({"id": "windows", "version_id": "2022"}, "windows2019srvNext_64Guest"),
    ({"id": "windows", "version_id": "XP"}, "windows2019srv_64Guest"),
])
def test_guest_id(os_info, expected):
    assert guest_id(os_info) == expected
    assert expected in vim.vm.GuestOsDescriptor.GuestOsIdentifier.values


def test_memory_and_disk_slots():
    assert memory_mb(1536 * MIB) == 1536 and memory_mb(1000 * MIB + 1) == 1004 and memory_mb(1) == 4
    assert [disk_slot(i) for i in (0, 6, 7, 14, 15)] == [(0, 0), (0, 6), (0, 8), (0, 15), (1, 0)]


# ---------------------------------------------------------------- validate: problems, nothing created
@pytest.fixture(scope="module")
def checked(module_vcsim, tmp_path_factory):
    """The module's simulator, untouched by these tests: validate only looks."""
    return module_vcsim, tmp_path_factory.mktemp("validate")


def validate_creates_nothing(sim, dest, spec) -> list:
    si = sim.connect()
    before = all_vms(si), sorted(os.listdir(datastore_folder(sim)))
    try:
        problems = dest.validate(spec)
    finally:
        dest.close()
    assert (all_vms(si), sorted(os.listdir(datastore_folder(sim)))) == before
    fields = si.RetrieveContent().customFieldsManager.field or []
    assert MIGRATION_FIELD not in [f.name for f in fields]
    return problems


def test_validate_good_spec(checked):
    sim, tmp = checked
    assert validate_creates_nothing(sim, destination(sim, tmp), vm_spec()) == []


def test_validate_host_instead_of_cluster(checked):
    sim, tmp = checked
    assert validate_creates_nothing(sim, destination(sim, tmp, cluster=None, host=STANDALONE), vm_spec()) == []


def test_validate_missing_datastore(checked):
    sim, tmp = checked
    problems = validate_creates_nothing(sim, destination(sim, tmp, datastore="NoSuchDS"), vm_spec())
    assert problems == ["datastore 'NoSuchDS' does not exist in datacenter 'DC0'"]


def test_validate_too_little_space(checked):
    sim, tmp = checked
    dest = destination(sim, tmp)
    free = dest.session.content().searchIndex.FindByInventoryPath(DC).datastore[0].summary.freeSpace
    problems = validate_creates_nothing(sim, dest, vm_spec(disks=(free // 2, free // 2 + GIB)))
    [problem] = problems
    assert problem.startswith(f"datastore 'LocalDS_0' has {free / GIB:.1f} GiB free; VM 'web01' needs ")
    assert "2 disk(s) at their full size" in problem and "swap file" in problem


def test_validate_name_taken(checked):
    sim, tmp = checked
    problems = validate_creates_nothing(sim, destination(sim, tmp), vm_spec(name=PRESET_VM))
    [problem] = problems
    assert problem.startswith(f"a VM named '{PRESET_VM}' already exists in datacenter 'DC0' (vm-")
    assert problem.endswith("rename or remove it")


def test_validate_unknown_port_group(checked):
    sim, tmp = checked
    problems = validate_creates_nothing(sim, destination(sim, tmp, networks={"eth0": "Prod", "*": STANDARD}),
                                        vm_spec())
    assert problems == ["NIC eth0 (52:54:00:00:00:01): port group 'Prod' does not exist"]


def test_validate_reports_every_problem_at_once(checked, tmp_path):
    sim, tmp = checked
    dest = destination(sim, tmp, cluster="NoCluster", folder="Nowhere/Wave 1", networks={"eth0": DVPG},
                       datastore_path=str(tmp_path / "not-mounted"))
    spec = vm_spec(name=PRESET_VM, nics=[NicSpec("00:50:56:01:00:01", "eth0"), NicSpec("52:54:00:00:00:09", "eth1")])
    problems = validate_creates_nothing(sim, dest, spec)
    assert problems == [
        "NIC eth1: MAC '52:54:00:00:00:09' is not in VMware's static range 00:50:56:00:00:00-00:50:56:3f:ff:ff",
        f"datastore_path {tmp_path / 'not-mounted'} is not a directory on this receiver (it must be where "
        "datastore 'LocalDS_0' is mounted)",
        "cluster 'NoCluster' does not exist in datacenter 'DC0'",
        "VM folder 'Nowhere/Wave 1' does not exist in datacenter 'DC0' (it is not created: make it in vCenter "
        "first)",
        problems[4],
        "NIC eth1: no port group for it in 'networks' (by its name, its MAC or \"*\")",
    ]
    assert problems[4].startswith(f"a VM named '{PRESET_VM}' already exists")


def test_validate_missing_datacenter(checked):
    sim, tmp = checked
    problems = validate_creates_nothing(sim, destination(sim, tmp, datacenter="DC9"), vm_spec())
    assert problems == ["datacenter 'DC9' does not exist (there are: DC0)"]


# ---------------------------------------------------------------- the replica VM (one simulator for the rest)
@pytest.fixture(scope="module")
def site(module_vcsim, tmp_path_factory):
    """A destination on its own simulator, and the Linux replica it made on written images."""
    sim = module_vcsim
    tmp = tmp_path_factory.mktemp("site")
    dest = destination(sim, tmp)
    spec = vm_spec()
    si = sim.connect()
    before = all_vms(si)
    contents = write_images(dest, spec)
    ref = dest.ensure_vm(spec)
    yield sim, tmp, dest, spec, ref, contents, before
    dest.close()


def test_ensure_vm_makes_the_replica(site):
    sim, _, dest, spec, ref, _, before = site
    si = sim.connect()
    assert sorted(set(all_vms(si)) - set(before)) == [ref.id]
    vm = vm_object(si, ref)
    assert vm.name == ref.name == "web01"
    assert vm.config.files.vmPathName == "[LocalDS_0] web01/web01.vmx" == ref.extra["vmx"]
    assert (vm.config.hardware.numCPU, vm.config.hardware.memoryMB) == (2, 1536)
    assert (vm.config.firmware, vm.config.guestId) == ("efi", "debian12_64Guest")
    assert vm.runtime.powerState == "poweredOff"
    assert vm.resourcePool.name == "Resources" and vm.resourcePool.owner.name == CLUSTER
    assert vm.parent.name == "vm"

    [scsi] = devices(vm, vim.vm.device.ParaVirtualSCSIController)
    disks = devices(vm, vim.vm.device.VirtualDisk)
    assert [(d.controllerKey, d.unitNumber) for d in disks] == [(scsi.key, 0), (scsi.key, 1)]
    assert [d.backing.fileName for d in disks] == ["[LocalDS_0] web01/web01_0.vmdk", "[LocalDS_0] web01/web01_1.vmdk"]
    assert [d.capacityInKB * 1024 for d in disks] == [d.size for d in spec.disks]

    nics = devices(vm, vim.vm.device.VirtualEthernetCard)
    assert all(isinstance(n, vim.vm.device.VirtualVmxnet3) for n in nics)
    assert [(n.macAddress, n.addressType) for n in nics] == [(nic.mac, "manual") for nic in spec.nics]
    assert [(n.connectable.connected, n.connectable.startConnected) for n in nics] == [(False, False)] * 2
    dvpg = next(n for n in vm.network if n.name == DVPG)
    assert nics[0].backing.port.portgroupKey == dvpg.key              # eth0 by name
    assert nics[1].backing.deviceName == STANDARD                     # eth1 by "*"
    assert devices(vm, vim.vm.device.VirtualCdrom) == []              # Linux: no tools installer drive


def test_replica_disks_are_the_receivers_images(site):
    sim, _, dest, spec, _, contents, _ = site
    si = sim.connect()
    for i, data in enumerate(contents):
        status, body = sim.http("GET", sim.datastore_url(f"web01/web01_{i}-flat.vmdk", DC, DATASTORE), si)
        assert status == 200 and body == data
        status, body = sim.http("GET", sim.datastore_url(f"web01/web01_{i}.vmdk", DC, DATASTORE), si)
        assert status == 200 and f'RW {len(data) // 512} VMFS "web01_{i}-flat.vmdk"'.encode() in body
    assert set(os.listdir(dest.image_dir(spec))) >= {"web01.vmx", "web01_0-flat.vmdk", "web01_0.vmdk",
                                                     "web01_1-flat.vmdk", "web01_1.vmdk"}


def test_migration_id_recorded(site):
    sim, _, _, spec, ref, _, _ = site
    si = sim.connect()
    vm = vm_object(si, ref)
    [key] = [f.key for f in si.RetrieveContent().customFieldsManager.field if f.name == MIGRATION_FIELD]
    assert [(v.key, v.value) for v in vm.customValue] == [(key, spec.migration_id)]
    assert f"osam.migration={spec.migration_id}\n" in vm.config.annotation
    assert ref.extra["migration_id"] == spec.migration_id


def test_ensure_vm_again_changes_nothing(site, tmp_path):
    sim, _, dest, spec, ref, _, _ = site
    si = sim.connect()
    vm = vm_object(si, ref)
    vms, descriptor = all_vms(si), Path(dest.descriptor_path(spec, 0)).stat().st_mtime_ns
    config = (vm.config.changeVersion, vm.config.annotation, len(vm.config.hardware.device))
    assert dest.ensure_vm(spec) == ref
    # As after a receiver restart: a new destination finds it by the migration id.
    again = destination(sim, tmp_path)
    try:
        assert again.find_vm(spec) == ref
        assert again.ensure_vm(spec) == ref
        assert again.validate(spec) == []          # its own name is not "taken"
    finally:
        again.close()
    assert all_vms(si) == vms
    assert (vm.config.changeVersion, vm.config.annotation, len(vm.config.hardware.device)) == config
    assert Path(dest.descriptor_path(spec, 0)).stat().st_mtime_ns == descriptor


def test_find_vm_by_annotation_alone(site):
    """Where custom fields cannot be set, the annotation line finds the VM."""
    sim, _, dest, spec, ref, _, _ = site
    si = sim.connect()
    cfm = si.RetrieveContent().customFieldsManager
    [key] = [f.key for f in cfm.field if f.name == MIGRATION_FIELD]
    cfm.SetField(entity=vm_object(si, ref), key=key, value="")
    try:
        assert dest.find_vm(spec) == ref
        assert dest.find_vm(vm_spec(migration_id="mig-unknown")) is None
    finally:
        dest.ensure_vm(spec)        # puts the field value back
    assert [v.value for v in vm_object(si, ref).customValue] == [spec.migration_id]


def test_cutover_nics_and_power(site):
    sim, _, dest, _, ref, _, _ = site
    vm = vm_object(sim.connect(), ref)

    def nic_states():
        return {(n.connectable.connected, n.connectable.startConnected)
                for n in devices(vm, vim.vm.device.VirtualEthernetCard)}

    dest.set_nics_connected(ref, True)
    assert nic_states() == {(True, True)}
    dest.power_on(ref)
    assert dest.power_state(ref) == ON and vm.runtime.powerState == "poweredOn"
    assert nic_states() == {(True, True)}
    dest.power_on(ref)                          # already on: nothing to do
    dest.set_nics_connected(ref, False)         # the rule when the source would not power off
    assert nic_states() == {(False, False)}
    dest.power_off(ref)
    assert dest.power_state(ref) == OFF
    dest.power_off(ref)                         # already off is fine
    dest.set_nics_connected(ref, False)         # nothing to change: no task
    assert dest.power_state(ref) == OFF


def test_install_tools_linux(site):
    _, _, dest, _, ref, _, _ = site
    assert "open-vm-tools from the fix-up" in dest.install_tools(ref)


def test_install_tools_windows_not_offered(site):
    sim, _, dest, _, _, _, _ = site
    spec = vm_spec(name="win01", migration_id="mig-win", disks=(MIB,), firmware="bios",
                   os_info={"id": "windows", "version_id": "2019"}, nics=[])
    write_images(dest, spec)
    ref = dest.ensure_vm(spec)
    vm = vm_object(sim.connect(), ref)
    assert (vm.config.guestId, vm.config.firmware) == ("windows2019srv_64Guest", "bios")
    [cdrom] = devices(vm, vim.vm.device.VirtualCdrom)
    assert isinstance(vm_device(vm, cdrom.controllerKey), vim.vm.device.VirtualAHCIController)
    assert devices(vm, vim.vm.device.VirtualEthernetCard) == []
    message = dest.install_tools(ref)
    assert message.startswith("MountToolsInstaller is not offered by this vCenter")
    assert "install VMware Tools in VM 'win01' by hand" in message


def vm_device(vm, key):
    return next(d for d in vm.config.hardware.device if d.key == key)


def test_vm_on_a_standalone_host(site, tmp_path):
    sim = site[0]
    dest = destination(sim, tmp_path, cluster=None, host=STANDALONE)
    spec = vm_spec(name="db01", migration_id="mig-host", disks=(MIB,))
    write_images(dest, spec)
    try:
        ref = dest.ensure_vm(spec)
        vm = vm_object(sim.connect(), ref)
        assert vm.runtime.host.name == STANDALONE and vm.resourcePool.owner.name == STANDALONE
    finally:
        dest.close()


def test_sixteen_disks_take_two_pvscsi_controllers(site):
    sim, _, dest, _, _, _, _ = site
    spec = vm_spec(name="files01", migration_id="mig-files", disks=(MIB,) * 16, nics=[])
    write_images(dest, spec)
    vm = vm_object(sim.connect(), dest.ensure_vm(spec))
    buses = {c.key: c.busNumber for c in devices(vm, vim.vm.device.ParaVirtualSCSIController)}
    slots = [(buses[d.controllerKey], d.unitNumber) for d in devices(vm, vim.vm.device.VirtualDisk)]
    assert slots == [(0, u) for u in range(16) if u != 7] + [(1, 0)]
    assert [d.backing.fileName for d in devices(vm, vim.vm.device.VirtualDisk)][-1] == \
        "[LocalDS_0] files01/files01_15.vmdk"


def test_ensure_vm_refuses_with_the_problems(site):
    sim, _, dest, _, _, _, _ = site
    si = sim.connect()
    before = all_vms(si)
    spec = vm_spec(name=PRESET_VM, migration_id="mig-taken", disks=(MIB,))
    with pytest.raises(DestinationError) as raised:
        dest.ensure_vm(spec)
    assert str(raised.value).startswith(f"cannot make VM '{PRESET_VM}': a VM named '{PRESET_VM}' already exists")
    assert all_vms(si) == before


def test_ensure_vm_without_images(site):
    sim, _, dest, _, _, _, _ = site
    before = all_vms(sim.connect())
    spec = vm_spec(name="noimg01", migration_id="mig-noimg", disks=(MIB,))
    with pytest.raises(DestinationError, match=r"disk sda of VM 'noimg01': no image at .*noimg01_0-flat.vmdk"):
        dest.ensure_vm(spec)
    assert all_vms(sim.connect()) == before


def test_leftover_vmx_is_a_problem(site):
    _, _, dest, _, _, _, _ = site
    spec = vm_spec(name="old01", migration_id="mig-old", disks=(MIB,))
    write_images(dest, spec)
    Path(dest.image_dir(spec), "old01.vmx").write_text('displayName = "old01"\n')
    [problem] = dest.validate(spec)
    assert problem == (f"{dest.image_dir(spec)}/old01.vmx exists but no VM of this migration does: the folder "
                       "holds the files of another VM (renamed since, or unregistered); move them away")


def test_task_error_carries_vcenters_message(site):
    sim, _, dest, _, ref, _, _ = site
    vm = vm_object(dest.session.service_instance(), ref)
    dest.power_off(ref)
    with pytest.raises(DestinationError, match=r"^powering off again: .*InvalidPowerState"):
        dest.session.wait(vm.PowerOffVM_Task(), "powering off again")


def test_dropped_session_reconnects_once(site):
    _, _, dest, _, ref, _, _ = site
    old = dest.session.service_instance()
    old.content.sessionManager.Logout()           # as when vCenter ends an idle session
    assert dest.power_state(ref) == OFF
    new = dest.session.service_instance()
    assert new is not old
    dest.close()
    with pytest.raises(vim.fault.NotAuthenticated):
        new.content.rootFolder.childEntity          # close() logged out
    assert dest.power_state(ref) == OFF            # and the next call logs in again


def test_vm_gone(site):
    sim, tmp, dest, _, _, _, _ = site
    spec = vm_spec(name="gone01", migration_id="mig-gone", disks=(MIB,))
    write_images(dest, spec)
    ref = dest.ensure_vm(spec)
    task = vm_object(sim.connect(), ref).Destroy_Task()
    dest.session.wait(task, "destroying")
    with pytest.raises(DestinationError, match=r"VM 'gone01' \(vm-\d+\) no longer exists"):
        dest.power_state(ref)
    assert dest.find_vm(spec) is None


# ---------------------------------------------------------------- a source that is a vSphere VM
def test_source_power_off(new_vcsim, tmp_path):
    sim = new_vcsim()
    config = VsphereConfig.from_dict(dict(site_config(sim, tmp_path), source={
        "url": f"https://{sim.host}:{sim.port}/sdk", "user": sim.user, "password": sim.password,
        "insecure": True, "datacenter": DC}))
    source = VsphereSource(config)
    try:
        ref = source.find_by_name_or_uuid(PRESET_VM)
        vm = vm_object(sim.connect(), ref)
        assert source.find_by_name_or_uuid(vm.config.uuid) == ref
        assert source.find_by_name_or_uuid(vm.config.instanceUuid) == ref
        assert source.power_state(ref) == ON
        source.power_off(ref)
        assert source.power_state(ref) == OFF and vm.runtime.powerState == "poweredOff"
        source.power_off(ref)                      # already off is fine
        assert "already powered off" in source.shutdown_guest(ref)

        other = source.find_by_name_or_uuid("DC0_H0_VM1")
        # The simulator powers off on ShutdownGuest without VMware Tools (vCenter would refuse).
        assert source.shutdown_guest(other, timeout=10) == "source VM 'DC0_H0_VM1': guest shut down"
        assert source.power_state(other) == OFF
        with pytest.raises(DestinationError, match="no VMs named or with UUID 'nope'"):
            source.find_by_name_or_uuid("nope")
    finally:
        source.close()


def test_source_section_required(tmp_path):
    with pytest.raises(DestinationError, match="no 'source' section"):
        VsphereSource(VsphereConfig.from_dict(VALID))


def test_install_tools_windows_mounts_the_installer_where_offered(site, monkeypatch):
    """The simulator has no MountToolsInstaller: that one call is faked (recorded), the rest is real."""
    sim, _, dest, _, _, _, _ = site
    spec = vm_spec(name="win02", migration_id="mig-win2", disks=(MIB,), firmware="bios",
                   os_info={"id": "windows", "version_id": "2019"}, nics=[])
    write_images(dest, spec)
    ref = dest.ensure_vm(spec)
    mounted = []
    monkeypatch.setattr(vim.VirtualMachine, "MountToolsInstaller", lambda self: mounted.append(self._moId),
                        raising=False)
    message = dest.install_tools(ref)
    assert mounted == [ref.id]
    assert message.startswith("VMware Tools installer mounted in the CD-ROM drive of VM 'win02'")
