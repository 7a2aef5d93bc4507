# Reads 16 bytes from the virtio entropy device every 500 ms (2 s timeout): VIRMO-RNG=ok|fail N.
i=0
while true; do
    n=$(timeout 2 dd if=/dev/hwrng bs=16 count=1 2>/dev/null | wc -c)
    if [ "$n" = "16" ]; then echo "VIRMO-RNG=ok $i"; else echo "VIRMO-RNG=fail $i"; fi
    i=$((i + 1))
    usleep 500000
done
