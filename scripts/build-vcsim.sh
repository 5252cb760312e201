#!/usr/bin/env bash
# Build the vSphere API simulator the tests run against: govmomi's vcsim (a vCenter with a
# datacenter, a cluster of ESX hosts, local datastores and a distributed port group, answering
# the SOAP API pyvmomi speaks and the datastore HTTP API /folder/...).
# Everything comes from Debian 12's own packages, no Go module proxy: the Go toolchain
# (golang-go) and govmomi's sources (golang-github-vmware-govmomi-dev, 0.24.2), built in
# GOPATH mode. That package ships the simulator library but no vcsim command, so this script
# writes a small main package of its own, and patches a private copy of the sources where
# the simulator answers differently from vCenter in ways pyvmomi 9 trips over (patch_simulator).
# Usage: bash scripts/build-vcsim.sh build [OUT]   build into OUT (default: the cached path)
#        bash scripts/build-vcsim.sh path          print the cached path (no root, no Go needed)
# The cached binary is $OSAM_CACHE/vcsim/vcsim-<hash> (OSAM_CACHE defaults to
# ~/.cache/vmware.osam), <hash> a hash of this script and of the installed govmomi package's
# version. build is a no-op while OUT exists, unless OSAM_REBUILD_IMAGES=1.
# Needs the Debian packages golang-go and golang-github-vmware-govmomi-dev (scripts/setup.sh
# installs them); no root otherwise.
# The binary: vcsim -l 127.0.0.1:0 -username U -password P prints one line
#   export GOVC_URL=https://U:P@127.0.0.1:PORT/sdk GOVC_SIM_PID=PID
# once it listens, and on SIGTERM/SIGINT removes its datastore folders ($TMPDIR/govcsim-*)
# and exits. vcsim -h lists the inventory sizes it takes.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SELF="$OSAM_ROOT/scripts/build-vcsim.sh"
CACHE_DIR="$(realpath -m "${OSAM_CACHE:-$HOME/.cache/vmware.osam}")/vcsim"
GOVMOMI_PACKAGE=golang-github-vmware-govmomi-dev
# Where Debian's Go library packages put their sources (GOPATH layout).
GOCODE=/usr/share/gocode
GOVMOMI_IMPORT=github.com/vmware/govmomi

# State the cleanup trap undoes: the build's scratch directory and the binary being built.
WORK="" TMP_BIN=""

govmomi_version() { dpkg-query -W -f='${Version}' "$GOVMOMI_PACKAGE" 2>/dev/null || printf 'none'; }
recipe_hash() {
    { cat "$SELF"; printf '%s=%s\n' "$GOVMOMI_PACKAGE" "$(govmomi_version)"; } | sha256sum | cut -c1-16
}
cached_path() { printf '%s/vcsim-%s\n' "$CACHE_DIR" "$(recipe_hash)"; }

# timed NAME CMD...: run one build step and say how long it took.
timed() {
    local t0="$EPOCHREALTIME"
    "$@"
    step "step $1: $(elapsed "$t0")"
}

cleanup() {
    set +e
    [ -z "$WORK" ] || rm -rf "$WORK"
    [ -z "$TMP_BIN" ] || rm -f "$TMP_BIN"
    WORK="" TMP_BIN=""
}

# ---------------------------------------------------------------- patches
# edit_go FILE WHY: in FILE, replace the code before the line "=>" on stdin with the code
# after it. The old code must match exactly once, whitespace aside: when a new govmomi
# package changes it the build stops here instead of shipping a simulator that silently
# lacks a fix. gofmt re-indents the result and rejects a syntax error.
edit_go() {
    local file="$1" why="$2"
    python3 -c '
import re, sys
path, why = sys.argv[1:]
old, sep, new = sys.stdin.read().partition("\n=>\n")
if not sep:
    sys.exit(f"edit_go {path}: no => line in the edit ({why})")
# Whole words only: "Type: x" must not match the end of "ManagedObjectType: x".
pattern = r"(?<!\w)" + r"\s+".join(re.escape(word) for word in old.split()) + r"(?!\w)"
with open(path) as f:
    text = f.read()
hits = len(re.findall(pattern, text))
if hits != 1:
    sys.exit(f"{path}: the code to patch matches {hits} times, not once ({why}): review the patch for this govmomi")
with open(path, "w") as f:
    f.write(re.sub(pattern, lambda _: new.strip(), text))
' "$file" "$why"
    gofmt -w "$file"
}

# The private copy of govmomi's simulator sources, patched where pyvmomi 9 needs vCenter's answers.
patch_simulator() {
    local sim="$WORK/gopath/src/$GOVMOMI_IMPORT/simulator"

    # pyvmomi 9 reads each property with PropertyCollector.Fetch. For a property that is
    # simply unset (no value, and no fault either) vcsim indexes an empty MissingSet: the
    # handler panics and pyvmomi sees the connection closed. vCenter answers with no value.
    edit_go "$sim/property_collector.go" "Fetch of an unset property" <<'EOF'
	if len(obj.PropSet) == 0 {
		fault := obj.MissingSet[0].Fault
=>
	if len(obj.PropSet) == 0 {
		if len(obj.MissingSet) == 0 {
			body.Res = &internal.FetchResponse{} // unset: no value
			return body
		}
		fault := obj.MissingSet[0].Fault
EOF

    # TaskInfo.entity is a ManagedEntity. vcsim also fills it for tasks of managers that are
    # not entities (FileManager, VirtualDiskManager...), which pyvmomi 9 refuses to read back
    # (TypeError: expected type vim.ManagedEntity, but got vim.FileManager): vCenter leaves
    # entity and entityName unset for those.
    edit_go "$sim/task.go" "TaskInfo.entity of a non-entity" <<'EOF'
	task.Info.EntityName = ref.Value
=>
	task.Info.EntityName = ref.Value
	if _, ok := e.(mo.Entity); !ok {
		if _, ok := Map.Get(ref).(mo.Entity); !ok { // not a managed entity: no entity
			task.Info.Entity = nil
			task.Info.EntityName = ""
		}
	}
EOF

    # SetField on a field that already has a value on the entity: vcsim appends a second
    # value, vCenter replaces the value (an entity has at most one value per field).
    edit_go "$sim/custom_fields_manager.go" "SetField replaces a value" <<'EOF'
		entity.CustomValue = append(entity.CustomValue, newValue)
		entity.Value = append(entity.Value, newValue)
=>
		others := func(values []types.BaseCustomFieldValue) []types.BaseCustomFieldValue {
			var kept []types.BaseCustomFieldValue
			for _, v := range values {
				if v.GetCustomFieldValue().Key != req.Key {
					kept = append(kept, v)
				}
			}
			return kept
		}
		entity.CustomValue = append(others(entity.CustomValue), newValue)
		entity.Value = append(others(entity.Value), newValue)
EOF

    # CustomFieldDef.type is the type of the field's values: "string" on vCenter (pyvmomi: str).
    # vcsim puts the managed object type there, which pyvmomi reads as vim.VirtualMachine.
    edit_go "$sim/custom_fields_manager.go" "CustomFieldDef.type is string" <<'EOF'
		Type:                    req.MoType,
=>
		Type:                    "string",
EOF
}

# ---------------------------------------------------------------- the vcsim command
write_main() {
    mkdir -p "$WORK/gopath/src/osam/vcsim"
    cat >"$WORK/gopath/src/osam/vcsim/main.go" <<'EOF'
// vcsim for the vmware.osam tests: govmomi's simulated vCenter on one address, with TLS.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi/simulator"
	_ "github.com/vmware/govmomi/vapi/simulator" // the REST API too (tags, content library)
)

func main() {
	model := simulator.VPX()
	listen := flag.String("l", "127.0.0.1:8989", "address to listen on; port 0 picks a free port")
	user := flag.String("username", "", "the only user name that may log in (empty: any)")
	password := flag.String("password", "", "its password")
	flag.IntVar(&model.Datacenter, "dc", model.Datacenter, "datacenters")
	flag.IntVar(&model.Cluster, "cluster", model.Cluster, "clusters per datacenter")
	flag.IntVar(&model.ClusterHost, "host", model.ClusterHost, "hosts per cluster")
	flag.IntVar(&model.Host, "standalone-host", model.Host, "standalone hosts per datacenter")
	flag.IntVar(&model.Datastore, "ds", model.Datastore, "local datastores (folders under $TMPDIR)")
	flag.IntVar(&model.Portgroup, "pg", model.Portgroup, "distributed port groups per datacenter")
	flag.IntVar(&model.Pool, "pool", model.Pool, "child resource pools per cluster")
	flag.IntVar(&model.Machine, "vm", model.Machine, "virtual machines per resource pool and standalone host")
	flag.IntVar(&model.Folder, "folder", model.Folder, "folders to put each datacenter in")
	flag.StringVar(&model.ServiceContent.About.ApiVersion, "api-version", model.ServiceContent.About.ApiVersion,
		"the API version the simulator announces")
	flag.BoolVar(&simulator.Trace, "trace", false, "log each SOAP request and response to stderr")
	flag.Parse()

	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	model.Service.RegisterEndpoints = true
	model.Service.Listen = &url.URL{Host: *listen}
	if *user != "" {
		model.Service.Listen.User = url.UserPassword(*user, *password)
	}
	model.Service.TLS = new(tls.Config) // the simulator's built-in test certificate
	server := model.Service.NewServer()

	// The line govc's own vcsim prints: callers parse it for the URL and the port picked.
	fmt.Printf("export GOVC_URL=%s GOVC_SIM_PID=%d\n", server.URL, os.Getpid())

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	model.Remove() // the datastore folders; the server goes with the process
}
EOF
}

compile() {
    # GOPATH mode: the patched govmomi copy first, then Debian's library sources.
    (
        cd "$WORK/gopath/src/osam/vcsim"
        export GO111MODULE=off GOFLAGS= GOPROXY=off CGO_ENABLED=0
        export GOPATH="$WORK/gopath:$GOCODE" GOCACHE="$WORK/gocache" GOTMPDIR="$WORK"
        go build -trimpath -ldflags='-s -w' -o "$TMP_BIN" .
    )
}

copy_sources() {
    mkdir -p "$WORK/gopath/src/${GOVMOMI_IMPORT%/*}"
    cp -r "$GOCODE/src/$GOVMOMI_IMPORT" "$WORK/gopath/src/$GOVMOMI_IMPORT"
}

smoke_test() {
    # It must at least start: print its usage (flag's -h exits 0 after printing to stderr).
    # Captured first: grep -q on a pipe would stop reading early and fail it with SIGPIPE.
    local usage
    usage=$("$TMP_BIN" -h 2>&1) || die "the built vcsim does not run: $TMP_BIN -h: $usage"
    grep -q -- '-username' <<<"$usage" || die "the built vcsim has no -username flag: $usage"
}

finish() {
    local built=$TMP_BIN
    TMP_BIN=""   # keep it: cleanup only removes the scratch directory now
    cleanup
    chmod 755 "$built"
    mv "$built" "$OUT"
}

up_to_date() {
    if [ -x "$OUT" ] && [ "${OSAM_REBUILD_IMAGES:-0}" != 1 ]; then
        step "vcsim $OUT: up to date"
        return 0
    fi
    return 1
}

build() {
    OUT=$(realpath -m "${1:-$(cached_path)}")
    up_to_date && return
    command -v go >/dev/null && command -v gofmt >/dev/null \
        || die "go not found: run scripts/setup.sh as root (Debian package golang-go)"
    [ -d "$GOCODE/src/$GOVMOMI_IMPORT/simulator" ] \
        || die "govmomi sources not found: run scripts/setup.sh as root (Debian package $GOVMOMI_PACKAGE)"
    command -v python3 >/dev/null || die "python3 not found: run scripts/setup.sh"
    mkdir -p "$CACHE_DIR" "$(dirname "$OUT")"
    # One build per output at a time; a second caller waits, then finds it built.
    exec 9>"$OUT.lock"
    flock 9
    up_to_date && return
    local t0="$EPOCHREALTIME"
    step "vcsim $OUT: building from $GOVMOMI_PACKAGE $(govmomi_version) with $(go version | cut -d' ' -f3)"
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    WORK=$(mktemp -d "$CACHE_DIR/build.XXXXXX")
    TMP_BIN="$OUT.building.$$"
    timed copy_sources
    timed patch_simulator
    timed write_main
    timed compile
    timed smoke_test
    timed finish
    trap - EXIT INT TERM
    step "vcsim $OUT: built in $(elapsed "$t0"), $(du -h "$OUT" | cut -f1)"
}

case "${1:-}" in
    build) build "${2:-}" ;;
    path) cached_path ;;
    *) die "usage: $0 build [OUT] | path" ;;
esac
