# Reads the disk named by virmo.disk=SERIAL (direct I/O) every 300 ms: VIRMO-READ=ok|fail N.
. /scenarios/lib.sh
serial=$(arg virmo.disk)
dev=$(disk_by_serial "$serial") || { echo "VIRMO-DISK-MISSING"; return; }
i=0
while true; do
    if dd if="$dev" of=/dev/null bs=4096 count=1 iflag=direct 2>/dev/null; then
        echo "VIRMO-READ=ok $i"
    else
        echo "VIRMO-READ=fail $i"
    fi
    i=$((i + 1))
    usleep 300000
done
