"""Finding things in a vCenter's inventory: where the replica VM goes (datacenter, cluster or
host, resource pool, folder, datastore), the port groups its NICs join, and the VMs that
carry a migration id or a name. Nothing here changes the inventory, except
migration_field(create=True), which defines the `osam.migration` custom field once.

Lookups go through the PropertyCollector: one round trip for all the VMs of a datacenter,
instead of one per VM and property.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from pyVmomi import vim, vmodl

from .vsphere_config import VsphereConfig

log = logging.getLogger("osam.destinations.vsphere")

MIGRATION_FIELD = "osam.migration"
# The annotation line that records the migration id where custom fields are not allowed.
ANNOTATION_LINE = re.compile(r"^osam\.migration=(\S+)\s*$", re.MULTILINE)
VM_PROPERTIES = ["name", "customValue", "config.annotation", "config.template"]


def annotation_for(vm_name: str, migration_id: str) -> str:
    return (f"Replica of {vm_name}, made by vmware.osam (OS assisted migration).\n"
            f"osam.migration={migration_id}\n")


# ---------------------------------------------------------------- the PropertyCollector
def retrieve(content: Any, root: Any, kind: type, properties: Sequence[str]) -> List[Tuple[Any, Dict[str, Any]]]:
    """(object, {property: value}) for every `kind` object below `root`."""
    view = content.viewManager.CreateContainerView(root, [kind], True)
    pc = vmodl.query.PropertyCollector
    try:
        spec = pc.FilterSpec(
            objectSet=[pc.ObjectSpec(obj=view, skip=True, selectSet=[
                pc.TraversalSpec(name="view", path="view", skip=False, type=vim.view.ContainerView)])],
            propSet=[pc.PropertySpec(type=kind, pathSet=list(properties))])
        collector = content.propertyCollector
        result = collector.RetrievePropertiesEx([spec], pc.RetrieveOptions())
        rows = []
        while result is not None:
            rows += [(o.obj, {p.name: p.val for p in o.propSet or ()}) for o in result.objects or ()]
            result = collector.ContinueRetrievePropertiesEx(result.token) if result.token else None
        return rows
    finally:
        view.Destroy()


def unique(objects: Sequence[Any]) -> List[Any]:
    """Without repeats (a datacenter may list a distributed port group twice)."""
    seen, out = set(), []
    for obj in objects:
        if obj._moId not in seen:
            seen.add(obj._moId)
            out.append(obj)
    return out


# ---------------------------------------------------------------- where the VM goes
@dataclass
class Placement:
    """The configured objects that exist; `problems` says what is missing."""
    datacenter: Any = None
    compute: Any = None      # the cluster or the host's compute resource
    host: Any = None         # the configured host, or the host picked in a cluster without DRS
    pool: Any = None
    folder: Any = None
    datastore: Any = None
    problems: List[str] = field(default_factory=list)


def locate(content: Any, config: VsphereConfig) -> Placement:
    at = Placement()
    at.datacenter = _datacenter(content, config.datacenter, at.problems)
    if at.datacenter is None:
        return at
    at.compute, at.host = _compute(content, at.datacenter, config, at.problems)
    if at.compute is not None:
        at.pool = _pool(at.compute, config, at.problems)
    at.folder = _folder(content, at.datacenter, config, at.problems)
    at.datastore = _datastore(at.datacenter, at.compute, at.host, config.datastore, at.problems)
    if at.compute is not None and at.host is None and at.datastore is not None and not _drs_places(at.compute):
        at.host = _host_for(at.compute, at.datastore, at.problems)
    return at


def _datacenter(content: Any, path: str, problems: List[str]) -> Any:
    found = content.searchIndex.FindByInventoryPath(path)
    if not isinstance(found, vim.Datacenter):
        names = [dc.name for dc, _ in retrieve(content, content.rootFolder, vim.Datacenter, ["name"])]
        problems.append(f"datacenter {path!r} does not exist (there are: {', '.join(sorted(names)) or 'none'})")
        return None
    return found


def _compute(content: Any, dc: Any, config: VsphereConfig, problems: List[str]) -> Tuple[Any, Any]:
    if config.cluster:
        cluster = _named(content, dc, vim.ClusterComputeResource, config.cluster, "cluster", problems)
        return cluster, None
    host = _named(content, dc, vim.HostSystem, config.host, "host", problems)
    if host is None:
        return None, None
    if host.runtime.connectionState != "connected" or host.runtime.inMaintenanceMode:
        problems.append(f"host {config.host!r} is {host.runtime.connectionState}"
                        f"{' and in maintenance mode' if host.runtime.inMaintenanceMode else ''}")
    return host.parent, host


def _named(content: Any, dc: Any, kind: type, name: str, what: str, problems: List[str]) -> Any:
    """The one `kind` object of this name (or inventory path below the host folder) in the datacenter."""
    if "/" in name:
        found = content.searchIndex.FindByInventoryPath(f"{_dc_path(dc)}/host/{name}")
        hits = [found] if isinstance(found, kind) else []
    else:
        hits = [obj for obj, props in retrieve(content, dc.hostFolder, kind, ["name"]) if props.get("name") == name]
    if len(hits) == 1:
        return hits[0]
    if hits:
        problems.append(f"{what} {name!r}: {len(hits)} of that name in datacenter {dc.name!r}; give its path "
                        "below the datacenter's host folder")
    else:
        problems.append(f"{what} {name!r} does not exist in datacenter {dc.name!r}")
    return None


def _dc_path(dc: Any) -> str:
    """The datacenter's inventory path (it may sit in folders)."""
    names, obj = [], dc
    while isinstance(obj, (vim.Datacenter, vim.Folder)) and obj.parent is not None:
        names.append(obj.name.replace("/", "%2f"))
        obj = obj.parent
    return "/".join(reversed(names))


def _pool(compute: Any, config: VsphereConfig, problems: List[str]) -> Any:
    pool = compute.resourcePool
    parts = config.resource_pool.split("/") if config.resource_pool else []
    if parts and parts[0] == pool.name:   # "Resources/Web" and "Web" mean the same pool
        parts = parts[1:]
    for depth, name in enumerate(parts):
        children = [p for p in pool.resourcePool or () if p.name == name]
        if not children:
            below = "/".join([compute.name] + parts[:depth]) or compute.name
            problems.append(f"resource pool {config.resource_pool!r} does not exist: no {name!r} in {below}")
            return None
        pool = children[0]
    return pool


def _folder(content: Any, dc: Any, config: VsphereConfig, problems: List[str]) -> Any:
    if not config.folder:
        return dc.vmFolder
    found = content.searchIndex.FindByInventoryPath(f"{_dc_path(dc)}/vm/{config.folder}")
    if not isinstance(found, vim.Folder):
        problems.append(f"VM folder {config.folder!r} does not exist in datacenter {dc.name!r} "
                        "(it is not created: make it in vCenter first)")
        return None
    return found


def _datastore(dc: Any, compute: Any, host: Any, name: str, problems: List[str]) -> Any:
    hits = [ds for ds in dc.datastore if ds.name == name]
    if not hits:
        problems.append(f"datastore {name!r} does not exist in datacenter {dc.name!r}")
        return None
    ds = hits[0]
    summary = ds.summary
    if not summary.accessible:
        problems.append(f"datastore {name!r} is not accessible")
    elif getattr(summary, "maintenanceMode", "normal") not in (None, "normal"):
        problems.append(f"datastore {name!r} is in maintenance mode")
    where = host if host is not None else compute
    # Ask the hosts, not Datastore.host: that list can be incomplete.
    if where is not None and ds not in (where.datastore or ()):
        problems.append(f"datastore {name!r} is not mounted on {where.name!r}")
    return ds


def _drs_places(compute: Any) -> bool:
    """True when vCenter picks the host itself (a standalone host, or a cluster with DRS)."""
    if not isinstance(compute, vim.ClusterComputeResource):
        return True
    drs = compute.configurationEx.drsConfig
    return bool(drs and drs.enabled)


def _host_for(cluster: Any, datastore: Any, problems: List[str]) -> Any:
    for host in cluster.host or ():
        if (host.runtime.connectionState == "connected" and not host.runtime.inMaintenanceMode
                and datastore in (host.datastore or ())):
            return host
    problems.append(f"cluster {cluster.name!r} has DRS off and no connected host outside maintenance "
                    f"mode that mounts datastore {datastore.name!r}")
    return None


# ---------------------------------------------------------------- port groups
def port_groups(content: Any, dc: Any) -> Dict[str, List[Any]]:
    """Port group name -> the networks of that name (standard, distributed or opaque),
    distributed uplink port groups left out."""
    by_name: Dict[str, List[Any]] = {}
    for net, props in retrieve(content, dc.networkFolder, vim.Network, ["name"]):
        if isinstance(net, vim.dvs.DistributedVirtualPortgroup) and net.config.uplink:
            continue
        by_name.setdefault(props.get("name", ""), []).append(net)
    return {name: unique(nets) for name, nets in by_name.items()}


def port_group(networks: Dict[str, List[Any]], name: str, compute: Any, host: Any) -> Tuple[Any, Optional[str]]:
    """The network named `name` that the VM's hosts can use, or a problem."""
    nets = networks.get(name, [])
    if not nets:
        return None, f"port group {name!r} does not exist"
    if len(nets) > 1:
        kinds = ", ".join(sorted(type(n).__name__.rsplit(".", 1)[-1] for n in nets))
        return None, f"port group {name!r} is ambiguous: {len(nets)} networks have that name ({kinds})"
    where = host if host is not None else compute
    if where is not None and nets[0] not in (where.network or ()):
        return None, f"port group {name!r} is not available on {where.name!r}"
    return nets[0], None


# ---------------------------------------------------------------- VMs and the migration id
def migration_field(content: Any, create: bool) -> Optional[int]:
    """The key of the `osam.migration` custom field, defined first when `create`; None where
    there are no custom fields (a host without vCenter) or no right to define them."""
    manager = content.customFieldsManager
    if manager is None:
        return None
    key = _field_key(manager)
    if key is not None or not create:
        return key
    try:
        return manager.AddCustomFieldDef(name=MIGRATION_FIELD, moType=vim.VirtualMachine).key
    except vim.fault.DuplicateName:     # defined meanwhile by another receiver
        return _field_key(manager)
    except vim.fault.NoPermission as e:
        log.warning("vCenter: no right to define custom field %s (%s): the migration id is kept in the "
                    "VM's annotation only", MIGRATION_FIELD, e.privilegeId)
        return None


def _field_key(manager: Any) -> Optional[int]:
    for f in manager.field or ():
        if f.name == MIGRATION_FIELD and f.managedObjectType in (None, vim.VirtualMachine):
            return f.key
    return None


@dataclass
class VmRow:
    vm: Any
    name: str
    migration_id: Optional[str]     # from the custom field, else the annotation
    template: bool


def vm_rows(content: Any, dc: Any, field_key: Optional[int]) -> List[VmRow]:
    rows = []
    for vm, props in retrieve(content, dc.vmFolder, vim.VirtualMachine, VM_PROPERTIES):
        rows.append(VmRow(vm, props.get("name", ""), _recorded_id(props, field_key),
                          bool(props.get("config.template"))))
    return rows


def _recorded_id(props: Dict[str, Any], field_key: Optional[int]) -> Optional[str]:
    for value in props.get("customValue") or ():
        if field_key is not None and value.key == field_key and getattr(value, "value", ""):
            return value.value
    m = ANNOTATION_LINE.search(props.get("config.annotation") or "")
    return m.group(1) if m else None
