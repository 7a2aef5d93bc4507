# Reboots at once (the VMM treats a guest reboot as the end of the VM).
reboot -f
