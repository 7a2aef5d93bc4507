# Helpers for scenarios (sourced): kernel command line arguments, disks by serial.
arg() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" /proc/cmdline; }
# The /dev node of the virtio disk whose serial (virtio-blk GET_ID) is $1.
disk_by_serial() {
    for b in /sys/block/vd*; do
        [ "$(cat "$b/serial" 2>/dev/null)" = "$1" ] && echo "/dev/${b##*/}" && return 0
    done
    return 1
}
