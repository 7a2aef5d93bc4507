# Prints the guest's uptime and kernel log (for boot timelines: `cargo xtask bench boot --timeline`).
echo "VIRMO-UPTIME $(cat /proc/uptime)"
dmesg
echo "VIRMO-DMESG-END"
