#!/bin/sh
# PID 1 on the first boot of the image made from `debootstrap --foreign` (kernel argument
# init=/systest/provision.sh): runs debootstrap's second stage natively on the emulated
# arm64 CPU, configures the system, prints "SYSTEST PROVISION OK" and powers off.
# The host keeps the resulting disk image as the cached base image.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive
say() { echo "SYSTEST PROVISION $*"; }
off() {
  sync
  mount -o remount,ro / 2>/dev/null
  sync
  mountpoint -q /proc || mount -t proc proc /proc
  echo o > /proc/sysrq-trigger
  sleep 60
}
fail() {
  say "FAILED: $*"
  [ -f /debootstrap/debootstrap.log ] && tail -n 40 /debootstrap/debootstrap.log
  off
}

mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mount -o remount,rw / || fail "cannot remount / rw"

say "second stage: start ($(cut -d' ' -f1 /proc/uptime) s since boot)"
/debootstrap/debootstrap --second-stage || fail "debootstrap --second-stage"
mountpoint -q /proc || mount -t proc proc /proc   # the second stage unmounts it on exit
say "second stage: done ($(cut -d' ' -f1 /proc/uptime) s since boot)"

echo whisper-systest > /etc/hostname
cat > /etc/hosts <<'HOSTS'
127.0.0.1	localhost
127.0.1.1	whisper-systest
::1		localhost ip6-localhost ip6-loopback
HOSTS
echo '/dev/vda / ext4 rw,errors=remount-ro 0 0' > /etc/fstab
# A fixed machine id: every test boot (qemu -snapshot) is then an ordinary boot, not a
# first boot (no systemd-firstboot prompts on the console).
rm -f /etc/machine-id
systemd-machine-id-setup || fail "systemd-machine-id-setup"
# Passwordless root on the serial console, for looking around by hand.
passwd -d root >/dev/null
apt-get clean
rm -rf /systest
say "$(dpkg-query -W -f='${binary:Package} ' systemd udev curl python3-minimal 2>/dev/null)"
say "$(dpkg-query -W -f='systemd ${Version}' systemd)"
say "OK"
off
