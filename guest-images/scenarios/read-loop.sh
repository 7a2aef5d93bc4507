# Reads the first 4 KiB of the disk named by virmo.disk=SERIAL (direct I/O) every 300 ms:
# VIRMO-READ=ok|fail N SECTORS (ok only when all 4096 bytes came back; SECTORS is the size the
# guest sees now).
. /scenarios/lib.sh
serial=$(arg virmo.disk)
dev=$(disk_by_serial "$serial") || { echo "VIRMO-DISK-MISSING"; return; }
i=0
while true; do
    n=$(dd if="$dev" bs=4096 count=1 iflag=direct 2>/dev/null | wc -c)
    size=$(cat "/sys/block/${dev##*/}/size")
    if [ "$n" = "4096" ]; then
        echo "VIRMO-READ=ok $i $size"
    else
        echo "VIRMO-READ=fail $i $size"
    fi
    i=$((i + 1))
    usleep 300000
done
