# Writes a marker into the disk named by virmo.disk=SERIAL at 1 MiB, reads it back, prints the
# first 16 bytes of the disk and its read-only flag, then powers off. VIRMO-DISK-WRITE=ok|fail.
. /scenarios/lib.sh
dev=$(disk_by_serial "$(arg virmo.disk)") || { echo "VIRMO-DISK-MISSING"; return; }
echo "VIRMO-DISK-HEAD=$(dd if="$dev" bs=16 count=1 2>/dev/null)"
echo "VIRMO-DISK-RO=$(cat "/sys/block/${dev##*/}/ro")"
if printf 'virmo-written-by-guest' | dd of="$dev" bs=512 seek=2048 conv=notrunc,fsync 2>/dev/null \
   && [ "$(dd if="$dev" bs=512 skip=2048 count=1 iflag=direct 2>/dev/null | head -c 22)" = "virmo-written-by-guest" ]; then
    echo "VIRMO-DISK-WRITE=ok"
else
    echo "VIRMO-DISK-WRITE=fail"
fi
sync
