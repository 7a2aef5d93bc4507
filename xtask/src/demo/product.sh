# The product demo (`cargo xtask demo`): a VirMO server and a device agent on this machine, a
# work VM provisioned, started, looked at, suspended and resumed, then deleted — every step
# through the same commands an administrator (virmoctl) and a device user (virmo) type.
#
# xtask runs it with busybox sh in the nested-KVM runner (with bash where the host's KVM is
# hardware-backed). BIN: the programs; IMAGES: the test guest's kernel and initramfs; WORK: a
# scratch folder (emptied first).
set -eu
set -o pipefail
BIN=${VIRMO_DEMO_BIN:-/virmo/bin}
IMAGES=${VIRMO_DEMO_IMAGES:-/virmo/images}
WORK=${VIRMO_DEMO_DIR:-/tmp/virmo-demo}
DEVICE=demo-host
STEPS=8
PATH="$BIN:$PATH"

now() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
n=0
step() { n=$((n + 1)); echo; echo "[$n/$STEPS] $*"; }
# Shows a command as typed, then its output, indented.
run() { echo "    \$ $*"; "$@" 2>&1 | sed 's/^/      /'; }
# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
    limit=$1; shift
    i=0
    until "$@" >/dev/null 2>&1; do
        i=$((i + 1))
        [ "$i" -le $((limit * 5)) ] || { echo "    timed out waiting for: $*"; return 1; }
        sleep 0.2
    done
}

# The VMM processes the agent runs (their command line names its data folder).
vmms() {
    found=""
    for p in /proc/[0-9]*; do
        tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q "^$BIN/vmm .*$WORK/device" && found="$found ${p#/proc/}"
    done
    [ -n "$found" ] && echo "$found" || echo " none"
}

pids=""
finish() {
    status=$?
    if [ "$status" -ne 0 ]; then
        echo
        echo "demo: FAILED (status $status). The last lines of the logs:"
        for log in "$WORK/server.log" "$WORK/agent.log" "$WORK/httpd.log"; do
            [ -f "$log" ] && { echo "--- $log"; tail -n 25 "$log"; }
        done
    fi
    for pid in $pids; do kill "$pid" 2>/dev/null || true; done
    exit "$status"
}
trap finish EXIT

rm -rf "$WORK"
mkdir -p "$WORK/files"
export VIRMO_ADMIN_TOKEN_FILE="$WORK/server/admin-token"

step "starting virmo-server (SQLite in $WORK/server)"
echo "    \$ virmo-server --data-dir $WORK/server --listen 127.0.0.1:0"
virmo-server --data-dir "$WORK/server" --listen 127.0.0.1:0 >"$WORK/server.out" 2>"$WORK/server.log" &
pids="$pids $!"
wait_for 30 grep -q listening "$WORK/server.out"
export VIRMO_SERVER="$(sed -n 's/^virmo-server listening on //p' "$WORK/server.out")"
echo "      listening on $VIRMO_SERVER; admin token in $VIRMO_ADMIN_TOKEN_FILE"

step "enrolling device $DEVICE: virmoctl prints its agent configuration"
echo "    \$ virmoctl enroll $DEVICE --notify 127.0.0.1:2948 > agent.toml"
{
    echo "vmm_bin = \"$BIN/vmm\""
    virmoctl enroll "$DEVICE" --notify 127.0.0.1:2948
} >"$WORK/agent.toml"
grep -E '^(url|auth|client_name|notification)' "$WORK/agent.toml" | sed 's/^/      /'

step "starting virmo-agent on the device (data in $WORK/device)"
echo "    \$ virmo-agent --config agent.toml --data-dir $WORK/device"
virmo-agent --config "$WORK/agent.toml" --data-dir "$WORK/device" 2>"$WORK/agent.log" &
pids="$pids $!"
wait_for 30 grep -q "virmo-agent: ready" "$WORK/agent.log"
SOCKET="$WORK/device/virmo.sock"
wait_for 30 sh -c "virmoctl devices | grep $DEVICE | grep -vq never"
run virmoctl devices

step "building the image bundle of the work VM from the test images, served over HTTP"
echo "    \$ virmo-agent bundle --kernel bzImage --initramfs initramfs.cpio.gz --name counter ... --output counter.tar"
HASH=$(virmo-agent bundle --kernel "$IMAGES/bzImage" --initramfs "$IMAGES/initramfs.cpio.gz" \
    --cmdline "console=ttyS0 quiet panic=-1 virmo.scenario=counter" --ready-marker VIRMO-GUEST-READY \
    --name counter --version 1.0 --memory-mib 128 --storage-mib 16 --entropy --removable-mib 8 \
    --output "$WORK/files/counter.tar" 2>/dev/null)
if command -v busybox >/dev/null; then
    busybox httpd -f -p 127.0.0.1:8000 -h "$WORK/files" >"$WORK/httpd.log" 2>&1 &
else
    python3 -m http.server 8000 --bind 127.0.0.1 --directory "$WORK/files" >"$WORK/httpd.log" 2>&1 &
fi
pids="$pids $!"
URL=http://127.0.0.1:8000/counter.tar
if command -v wget >/dev/null; then wait_for 10 wget -q -O /dev/null "$URL"; else sleep 1; fi
echo "      $URL  $(du -h "$WORK/files/counter.tar" | cut -f1)  $HASH"

step "provisioning VM work from $URL"
t=$(now)
run virmoctl provision "$DEVICE" work --url "$URL" --hash "$HASH" --watch
echo "      provisioned in $(since "$t") (job queued → sent → accepted → done)"

step "starting work; its state and console"
t=$(now)
run virmoctl start "$DEVICE" work --watch
echo "      started in $(since "$t")"
wait_for 60 sh -c "virmoctl vms $DEVICE | grep -q running"
run virmoctl vms "$DEVICE"
wait_for 60 grep -q VIRMO-COUNTER "$WORK/device/vms/"*/console.log
sleep 1
echo "    the device user's view (the console is on the device, not on the server):"
run virmo --socket "$SOCKET" list
echo "    \$ virmo --socket $SOCKET console work      (the last lines; Ctrl-] detaches)"
sleep 2 | virmo --socket "$SOCKET" console work 2>/dev/null | tr -d '\r' | grep . | tail -n 4 | sed 's/^/      /'

step "suspending work for diagnostics (RAM and CPU released), then resuming it"
LOG=$(ls "$WORK/device/vms/"*/console.log)
t=$(now)
run virmoctl suspend "$DEVICE" work --watch
echo "      suspended in $(since "$t")"
# A line the guest had finished before it was stopped (the last one may be cut in two).
last=$(tr -d '\r' <"$LOG" | grep VIRMO-COUNTER | tail -n 2 | head -n 1)
wait_for 60 sh -c "virmoctl vms $DEVICE | grep -q suspended"
run virmoctl vms "$DEVICE"
echo "      VMM processes of the device now:$(vmms)"
t=$(now)
run virmoctl resume "$DEVICE" work --watch
echo "      resumed in $(since "$t")"
wait_for 60 sh -c "virmoctl vms $DEVICE | grep -q running"
run virmoctl vms "$DEVICE"
wait_for 30 sh -c "tr -d '\r' <$LOG | grep -A 3 -x $last | grep -c . | grep -qx 4"
echo "    the guest's counter goes on from where it stopped (its console log on the device):"
tr -d '\r' <"$LOG" | grep -A 3 -x "$last" | sed -e '1s/$/   <- before the suspend/' -e 's/^/      /'

step "deleting work (the employee leaves): nothing of it stays on the device"
t=$(now)
run virmoctl delete "$DEVICE" work --watch
echo "      deleted in $(since "$t")"
wait_for 60 sh -c "! virmoctl vms $DEVICE | grep -q '^work'"
run virmoctl vms "$DEVICE"
echo "      files left of the VM: $(ls "$WORK/device/vms" | wc -l); alerts the server received:"
virmoctl alerts --device "$DEVICE" | awk '{ print "      " $5, $6, $7, $8, $9 }'
echo
echo "demo: done"
