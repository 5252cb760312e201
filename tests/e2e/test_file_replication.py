"""End to end: three real daemons on loopback with real mutual TLS migrate a tree holding every
file kind, through full, continuous and final sync, and the replica is proven identical."""
import json
import os
import time

import pytest

from tests.e2e.site import Site, wait_for
from tests.util.trees import diff_trees, make_rich_tree, mutate_rich_tree

pytestmark = pytest.mark.need_root  # owners, device nodes, fanotify


def rich_guest(base, sync_params: str):
    """A rich source tree and a sentinel --etc holding these sync.params."""
    src, etc = base / "guest", base / "etc"
    make_rich_tree(src)
    (etc / "etc").mkdir(parents=True)
    (etc / "etc" / "sync.params").write_text(sync_params)
    return src, etc


def replica_matches(src, replica, ignore=()):
    """True when the replica equals src; False while it is still being written."""
    try:
        return not diff_trees(src, replica, ignore=ignore)
    except FileNotFoundError:  # an entry was replaced or removed mid-snapshot
        return False


def test_full_continuous_and_final_sync_make_an_identical_replica(site, disk_tmp_path):
    src = disk_tmp_path / "guest"
    make_rich_tree(src)
    etc = disk_tmp_path / "etc"
    (etc / "etc").mkdir(parents=True)
    (etc / "excluded_paths").write_text("# logs churn; the final sync carries them\n/excluded\n")
    # What a database's clean stop would do: write its last state just before the final sync.
    (etc / "etc" / "sync.params").write_text(
        f"max_retry_interval=2\npre_quiesce_hook=echo flushed > {src}/files/flushed-at-quiesce\n")
    site.start_all("guest1", src, etc)

    assert "guest1" in site.osamctl("guests").stdout
    source_site = json.loads((site.base / "gateway-inventory.json").read_text())
    assert source_site["guest1"]["inventory"]["hostname"] == site.guest("guest1")["inventory"]["hostname"]
    out = site.osamctl("migrate", "guest1", "--switchover", "manual")
    assert out.returncode == 0, out.stderr
    site.wait_phase("guest1", "continuous_sync")
    status = json.loads(site.osamctl("status", "guest1", "--json").stdout)
    assert status["phase"] == "continuous_sync" and status["bytes_done"] > 0 and status["bytes_total"] > 0
    wait_for(lambda: site.migration("guest1")["switchover_due"] is not None
             and site.migration("guest1")["last_sync_at"], 60, "the first continuous pass")
    replica = site.replica("guest1")
    assert diff_trees(src, replica, ignore=[b"excluded"]) == []

    mutate_rich_tree(src)
    (src / "excluded" / "late.log").write_bytes(b"written during continuous sync\n")
    try:
        wait_for(lambda: replica_matches(src, replica, ignore=[b"excluded"]), 30,
                 "continuous sync to carry every change")
    except AssertionError:
        pytest.fail("\n".join(diff_trees(src, replica, ignore=[b"excluded"])) + site.dump_logs())
    assert not (replica / "excluded" / "late.log").exists(), "excluded path synced before the final sync"

    assert site.osamctl("switchover", "guest1").returncode == 0
    done = site.wait_phase("guest1", "completed", 60)
    assert (src / "files" / "flushed-at-quiesce").read_text() == "flushed\n"
    assert diff_trees(src, replica) == []
    assert (replica / "excluded" / "late.log").read_bytes() == b"written during continuous sync\n"
    assert [h["to"] for h in done["history"]] == [
        "registered", "full_sync", "continuous_sync", "quiesce", "final_sync",
        "fixup", "replica_vm", "tools", "replica_on", "source_off", "network", "completed"]


def make_bulk_tree(root, total_mib=240, seed=3):
    """Enough data that a full sync takes a few seconds: files of 1-8 MiB, half compressible."""
    import random
    rnd = random.Random(seed)
    root.mkdir(parents=True)
    left, i = total_mib << 20, 0
    while left > 0:
        n = min(left, rnd.randint(1, 8) << 20)
        d = root / f"d{i % 7}"
        d.mkdir(exist_ok=True)
        data = rnd.randbytes(n // 2) + bytes(range(256)) * (n // 2 // 256)
        (d / f"f{i:04d}.bin").write_bytes(data[:n])
        left -= n
        i += 1
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


@pytest.mark.parametrize("victim", ["gateway", "receiver", "sentinel"])
def test_interrupted_full_sync_resumes_without_starting_over(site, disk_tmp_path, victim):
    src = disk_tmp_path / "guest"
    total = make_bulk_tree(src)
    site.start_all("guest2", src)
    assert site.api("POST", "/v1/migrations", {"guest": "guest2", "switchover": "manual"})[0] == 201
    site.wait_phase("guest2", "full_sync")
    wait_for(lambda: (site.migration("guest2")["bytes_done"] or 0) > total * 0.35, 120, "a third of the data")
    if victim == "gateway":
        site.gateway.kill()
        time.sleep(1)
        site.start_gateway()
    elif victim == "sentinel":
        site.sentinels["guest2"].kill()
        site.start_sentinel("guest2", src)
    else:
        site.receiver.kill()
        # No torn file: whatever the killed receiver left in the replica is complete.
        replica = site.replica("guest2")
        for path in replica.rglob("*"):
            if path.is_file():
                rel = path.relative_to(replica)
                assert path.read_bytes() == (src / rel).read_bytes(), f"torn file {rel}"
        site.start_receiver()
    site.wait_phase("guest2", "continuous_sync", 180)
    sent = site.migration("guest2")["bytes_done"]
    assert diff_trees(src, site.replica("guest2")) == []
    # Resumed after the last checkpoint: at most a few checkpoints' worth was sent twice.
    assert sent < total * 1.35, f"sent {sent} bytes for {total}: the sync started over"


def test_link_cut_during_continuous_sync_loses_nothing(site, disk_tmp_path):
    src = disk_tmp_path / "guest"
    make_rich_tree(src)
    site.start_all("guest3", src)
    site.api("POST", "/v1/migrations", {"guest": "guest3", "switchover": "manual"})
    site.wait_phase("guest3", "continuous_sync")
    site.gateway.kill()
    mutate_rich_tree(src)  # while the link is down
    time.sleep(0.5)
    site.start_gateway()
    wait_for(lambda: replica_matches(src, site.replica("guest3")), 60, "the replica to catch up")
    site.api("POST", "/v1/migrations/guest3/switchover", {})
    site.wait_phase("guest3", "completed", 60)
    assert diff_trees(src, site.replica("guest3")) == []


def test_changes_made_while_the_sentinel_was_down_reach_the_replica(site, disk_tmp_path):
    """A restarted sentinel cannot know what its journal missed: it walks and compares (and
    final_verify=yes makes the final sync walk the whole tree as well)."""
    src, etc = rich_guest(disk_tmp_path, "final_verify=yes\n")
    site.start_all("guest4", src, etc)
    site.api("POST", "/v1/migrations", {"guest": "guest4", "switchover": "manual"})
    site.wait_phase("guest4", "continuous_sync")
    site.sentinels["guest4"].kill()  # changes made now reach no journal
    (src / "files" / "while-the-sentinel-was-down").write_bytes(b"x" * 5000)
    site.start_sentinel("guest4", src, etc)
    wait_for(lambda: site.guest("guest4")["connected"], 30, "the sentinel to reconnect")
    site.api("POST", "/v1/migrations/guest4/switchover", {})
    site.wait_phase("guest4", "completed", 60)
    assert diff_trees(src, site.replica("guest4")) == []


def test_link_down_beyond_max_retry_interval_fails_the_migration(disk_tmp_path):
    """Hours are scaled: with OSAM_LINK_TIME_SCALE=0.001 the 1 h interval is 3.6 s."""
    site = Site(disk_tmp_path / "site")
    try:
        site.start_receiver(env={"OSAM_LINK_TIME_SCALE": "0.001"})
        site.start_gateway()
        src, etc = rich_guest(disk_tmp_path, "max_retry_interval=1\n")
        site.start_sentinel("guest5", src, etc)
        wait_for(lambda: site.guest("guest5"), 30, "registration")
        site.api("POST", "/v1/migrations", {"guest": "guest5", "switchover": "manual"})
        site.wait_phase("guest5", "continuous_sync")
        before = diff_trees(src, site.replica("guest5"))
        site.gateway.kill()
        failed = site.wait_phase("guest5", "failed", 30)
        assert "max_retry_interval" in failed["reason"] and "1 h" in failed["reason"]
        assert diff_trees(src, site.replica("guest5")) == before == []  # nothing replicated was lost
    finally:
        site.stop_all()


def test_two_guests_at_once_immediate_and_scheduled_across_a_receiver_restart(site, disk_tmp_path):
    """One gateway carries both guests. One switches over as soon as its first continuous pass
    is done; the other at a scheduled time, which survives a receiver restart."""
    import datetime
    trees = {}
    site.start_receiver()
    site.start_gateway()
    for name, seed in (("alpha", 11), ("beta", 12)):
        trees[name] = disk_tmp_path / name
        make_rich_tree(trees[name], seed=seed)
        site.start_sentinel(name, trees[name])
    for name in trees:
        wait_for(lambda: site.guest(name), 30, f"{name} to register")
    at = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=8)).isoformat()
    assert site.osamctl("migrate", "alpha", "--switchover", "immediate").returncode == 0
    out = site.osamctl("migrate", "beta", "--switchover", f"at={at}")
    assert out.returncode == 0, out.stderr
    site.wait_phase("beta", "continuous_sync")
    site.receiver.kill()
    site.start_receiver()
    done = site.wait_phase("alpha", "completed", 60)
    assert [h["to"] for h in done["history"]][-9:] == ["quiesce", "final_sync", "fixup", "replica_vm", "tools", "replica_on", "source_off", "network", "completed"]
    beta = site.wait_phase("beta", "completed", 60)
    switched = next(h["at"] for h in beta["history"] if h["to"] == "quiesce")
    assert switched >= at[:19]  # not before its time
    for name, tree in trees.items():
        assert diff_trees(tree, site.replica(name)) == [], name


def test_the_sentinels_own_state_inside_the_root_is_never_replicated(site, disk_tmp_path):
    src = disk_tmp_path / "guest"
    make_rich_tree(src)
    site.start_receiver()
    site.start_gateway()
    run_state = src / "var-lib-sentinel"  # as when --root / holds /var/lib/vmware-hcx-osam
    site.start_sentinel("guest6", src, state=run_state)
    wait_for(lambda: site.guest("guest6") and site.guest("guest6")["connected"], 30, "registration")
    site.api("POST", "/v1/migrations", {"guest": "guest6", "switchover": "manual"})
    site.wait_phase("guest6", "continuous_sync")
    (src / "files" / "later").write_bytes(b"after the full sync")
    wait_for(lambda: (site.replica("guest6") / "files" / "later").exists(), 30, "continuous sync")
    site.api("POST", "/v1/migrations/guest6/switchover", {})
    site.wait_phase("guest6", "completed", 60)
    assert (run_state / "index.sqlite").exists()
    assert not (site.replica("guest6") / "var-lib-sentinel").exists()
    assert diff_trees(src, site.replica("guest6"), ignore=[b"var-lib-sentinel"]) == []


def test_a_full_replica_disk_shows_on_the_migration_and_the_sync_resumes_once_space_is_freed(disk_tmp_path):
    """The receiver's data on a small file system of its own (a loop-mounted image)."""
    import subprocess
    image, mnt = disk_tmp_path / "data.img", disk_tmp_path / "data-fs"
    mnt.mkdir()
    subprocess.run(["truncate", "-s", "96M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    site = Site(disk_tmp_path / "site")
    try:
        site.data = mnt / "data"
        filler = mnt / "filler"
        free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
        subprocess.run(["fallocate", "-l", str(free - (8 << 20)), str(filler)], check=True)
        src = disk_tmp_path / "guest"
        src.mkdir()
        for i in range(12):
            (src / f"blob{i:02d}").write_bytes(os.urandom(2 << 20))
        site.start_all("guest7", src)
        site.api("POST", "/v1/migrations", {"guest": "guest7", "switchover": "manual"})
        m = wait_for(lambda: (lambda m: m if m["last_error"] else None)(site.migration("guest7")), 60,
                     "the full disk to show on the migration")
        assert "No space left" in m["last_error"] and m["phase"] == "full_sync"
        replica = site.replica("guest7")
        for path in replica.rglob("blob*"):  # whatever landed is whole
            assert path.read_bytes() == (src / path.name).read_bytes(), path
        filler.unlink()
        site.wait_phase("guest7", "continuous_sync", 120)
        assert site.migration("guest7")["last_error"] is None
        assert diff_trees(src, replica) == []
    finally:
        site.stop_all()
        subprocess.run(["umount", "-l", str(mnt)], check=False)
