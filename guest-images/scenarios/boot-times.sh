# Prints the guest's uptime and the kernel log lines that mark its boot phases: kvmclock start
# (its offset is the time since the VM was created), initramfs unpacked, /init started, and with
# `initcall_debug` every initcall that took 10 ms or more.
echo "VIRMO-UPTIME $(cat /proc/uptime)"
dmesg | grep -E "sched offset|Freeing initrd|Run /init|XSAVE|clocksource: Switched|after [0-9]{5,} usecs"
echo "VIRMO-DMESG-END"
