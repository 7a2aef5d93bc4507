# Panics the kernel (the VMM sees it through pvpanic).
echo 1 > /proc/sys/kernel/sysrq
echo c > /proc/sysrq-trigger
