# Reports the guest's CPUs and memory as the kernel sees them, then powers off.
echo "VIRMO-NPROC=$(nproc)"
echo "VIRMO-MEMTOTAL-KB=$(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo)"
