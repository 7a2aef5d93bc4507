#!/bin/sh
# Finds the syscalls each VMM thread makes that its seccomp filter does not allow, by running the
# integration tests (in the nested-KVM runner) with every VMM in `--seccomp log` mode and reading
# the kernel's seccomp audit records (comm = thread name, syscall number). Also counts all
# syscalls of one boot with `strace -f -c`. See docs/seccomp.md ("Finding the syscalls").
#
#   cargo xtask runner --vmm target/debug/vmm --program /usr/bin/strace:/virmo/bin/strace \
#     --file vmm/src/seccomp/discover-syscalls.sh:/virmo/discover.sh \
#     --program target/debug/deps/boot-HASH:/virmo/tests/boot ... -- sh /virmo/discover.sh
set -u
cat > /tmp/vmm-log <<'WRAP'
#!/bin/sh
exec /virmo/bin/vmm --seccomp log "$@"
WRAP
chmod +x /tmp/vmm-log
export VIRMO_VMM_BIN=/tmp/vmm-log VIRMO_IMAGES_DIR=/virmo/images
echo 1 > /proc/sys/kernel/printk_ratelimit_burst 2>/dev/null
dmesg -c > /dev/null
for t in /virmo/tests/*; do
    echo "discover: running $t"
    "$t" --test-threads=1 2>&1 | grep -E '^test |test result'
done
echo "discover: seccomp audit records (count, thread, syscall number):"
dmesg | grep 'type=1326' | sed -n 's/.*comm="\([^"]*\)".*syscall=\([0-9]*\).*/\1 \2/p' | sort | uniq -c
if [ -x /virmo/bin/strace ]; then
    echo "discover: strace -f -c of one boot to power-off"
    /virmo/bin/strace -f -c -o /tmp/strace-count /virmo/bin/vmm --kernel /virmo/images/vmlinux \
        --initramfs /virmo/images/initramfs.cpio.gz \
        --cmdline "console=ttyS0 quiet panic=-1 virmo.scenario=poweroff" --console none
    echo "discover: vmm exit status $?"
    cat /tmp/strace-count
fi
