# Fills a 64 MiB tmpfs file (guest RAM) with random bytes, records its checksum, then verifies it in a
# loop, printing a counter: after suspend/resume the checksum still matches and the counter continues.
dd if=/dev/urandom of=/tmp/buffer bs=1M count=64 2>/dev/null
sha256sum /tmp/buffer | cut -d' ' -f1 > /tmp/buffer.sum
echo "VIRMO-BUFFER-WRITTEN=$(cat /tmp/buffer.sum)"
i=0
while true; do
    if [ "$(sha256sum /tmp/buffer | cut -d' ' -f1)" = "$(cat /tmp/buffer.sum)" ]; then
        echo "VIRMO-MEMCHECK=ok $i"
    else
        echo "VIRMO-MEMCHECK=bad $i"
    fi
    i=$((i + 1))
    sleep 1
done
