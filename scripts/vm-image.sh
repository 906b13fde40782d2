#!/usr/bin/env bash
# Builds the small Linux guest the VM executor tests boot under QEMU, from
# Debian packages, into DIR (default target/vm-image), and reuses it when it
# is already there:
#   DIR/vmlinuz, DIR/initrd.img   a cloud kernel and a hand-made initramfs:
#                                 busybox init, dropbear sshd on port 22
#   DIR/host_ed25519.pub          the guest's SSH host key (OpenSSH form)
#   DIR/id_ed25519                the key the guest's root accepts
#   DIR/disk.qcow2                a blank disk: the base image of the
#                                 throw-away overlay each boot gets
#   DIR/qemu/                     qemu-system-x86_64, when it cannot be
#                                 installed without removing a package
# No FreeBSD image can be had here. The guest builds the miniature FreeBSD
# tree (tests/fixtures/freebsd-src-mini) with this machine's own tool chain,
# copied in: gcc, binutils, the C library and kernel headers, bmake, mtree.
# So a build in the guest and a `local` build here give identical trees.
# The fruix binary is not in the image (it changes with every build); the
# tests append it to the initramfs as a second archive.
set -euo pipefail

dir=${1:-target/vm-image}
# The stamp names the image's layout version: a cached image of an older
# layout is rebuilt.
version=6
stamp="$dir/.complete"
[ "$(cat "$stamp" 2>/dev/null)" = "$version" ] && exit 0
rm -rf "$dir"
export DEBIAN_FRONTEND=noninteractive
apt_get() { apt-get -o Dpkg::Use-Pty=0 "$@"; }
apt_get update -qq

need=()
for tool in busybox:busybox-static dropbear:dropbear-bin ssh-keygen:openssh-client cpio:cpio \
  gcc:gcc bmake:bmake mtree:mtree-netbsd qemu-img:qemu-utils; do
  command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
[ ${#need[@]} -eq 0 ] || apt_get install -y -qq --no-install-recommends --no-remove "${need[@]}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$dir"

# QEMU: installed when that removes nothing; else unpacked beside the image
# (a newer qemu-utils from backports conflicts with bookworm's emulator).
if ! command -v qemu-system-x86_64 >/dev/null && [ ! -x "$dir/qemu/usr/bin/qemu-system-x86_64" ]; then
  if ! apt_get install -y -qq --no-install-recommends --no-remove qemu-system-x86; then
    deps=$(apt-cache depends qemu-system-x86 qemu-system-common | awk '/Depends:/ {print $2}' \
      | grep -v -e '^qemu-system-' -e '^<' | sort -u)
    # shellcheck disable=SC2086
    apt_get install -y -qq --no-install-recommends --no-remove $deps
    (cd "$work" && apt_get download qemu-system-x86 qemu-system-common qemu-system-data)
    for deb in "$work"/qemu-system-*.deb; do dpkg-deb -x "$deb" "$dir/qemu"; done
  fi
fi
# The unpacked emulator, on PATH for the tests (DIR/bin), finding its firmware.
if [ -x "$dir/qemu/usr/bin/qemu-system-x86_64" ]; then
  mkdir -p "$dir/bin"
  q=$(cd "$dir/qemu" && pwd)
  printf '#!/bin/sh\nexec "%s/usr/bin/qemu-system-x86_64" -L "%s/usr/share/qemu" -L /usr/share/seabios -L /usr/lib/ipxe/qemu "$@"\n' \
    "$q" "$q" >"$dir/bin/qemu-system-x86_64"
  chmod +x "$dir/bin/qemu-system-x86_64"
fi

# The kernel, unpacked (never installed on this machine).
kpkg=$(apt-cache search --names-only '^linux-image-[0-9.]+-[0-9]+-cloud-amd64$' | awk '{print $1}' | sort -V | tail -n 1)
(cd "$work" && apt_get download "$kpkg")
dpkg-deb -x "$work"/linux-image-*.deb "$work/kernel"
kver=${kpkg#linux-image-}
cp "$work/kernel/boot/vmlinuz-$kver" "$dir/vmlinuz"

# The initramfs.
root="$work/root"
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,root/.ssh,etc/dropbear,lib/modules,var/log,usr/bin,usr/sbin}
cp "$(command -v busybox)" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
# put FILE...: copies each file to the same path in the guest (following
# symbolic links), with the shared libraries an executable links.
put() {
  local f lib
  for f in "$@"; do
    mkdir -p "$root$(dirname "$f")"
    cp -L "$f" "$root$f"
    if [ -x "$f" ] && ldd "$f" >/dev/null 2>&1; then
      for lib in $(ldd "$f" | awk '/=>/ {print $3} /^\t\// {print $1}'); do
        [ -e "$root$lib" ] || { mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"; }
      done
    fi
  done
}
# as: put, under the name NAME.
put_as() { put "$1"; [ "$1" = "$2" ] || ln -sf "$1" "$root$2"; }
# /bin/sh is dash: busybox's sh runs its own applets before PATH (its `ar`
# is not binutils' ar).
rm "$root/bin/sh"
put_as "$(readlink -f "$(command -v dash)")" /bin/sh
put "$(command -v dropbear)"
mv "$root$(command -v dropbear)" "$root/sbin/dropbear"

# The tool chain: this machine's gcc, binutils and C library, so that the
# guest's build output equals a local build's. Only the headers of the C
# library and the kernel (not all of /usr/include: the initramfs lives in
# the guest's memory).
gccdir=$(dirname "$(gcc -print-prog-name=cc1)")
put_as "$(readlink -f "$(command -v gcc)")" /usr/bin/cc
ln -sf cc "$root/usr/bin/gcc"
put "$gccdir/cc1" "$gccdir/collect2" "$gccdir/liblto_plugin.so" \
  "$gccdir"/crt*.o "$gccdir/libgcc.a" "$gccdir/libgcc_eh.a" "$gccdir/libgcc_s.so"
(cd / && find "${gccdir#/}/include" -type f) | while read -r f; do put "/$f"; done
put_as "$(readlink -f "$(command -v as)")" /usr/bin/as
put_as "$(readlink -f "$(command -v ld)")" /usr/bin/ld
put_as "$(readlink -f "$(command -v ar)")" /usr/bin/ar
multiarch=$(gcc -print-multiarch)
for f in crt1.o crti.o crtn.o Scrt1.o libc.so libc_nonshared.a libm.so libm.a libmvec.so; do
  [ -e "/usr/lib/$multiarch/$f" ] && put "/usr/lib/$multiarch/$f"
done
for lib in libc.so.6 libm.so.6 libmvec.so.1 libgcc_s.so.1; do
  for d in /lib/$multiarch /usr/lib/$multiarch; do
    [ -e "$d/$lib" ] && put "$d/$lib"
  done
done
dpkg -L libc6-dev linux-libc-dev | grep '^/usr/include/' | while read -r f; do
  [ -f "$f" ] && put "$f"
done
# bmake and its system makefiles; mtree, which checks source objects and
# writes manifests in the guest.
put "$(command -v bmake)" "$(command -v mtree)"
# GNU date: the fixture's newvers.sh formats SOURCE_DATE_EPOCH with
# GNU's -d @N or BSD's -r N; busybox's date has neither meaning.
put /usr/bin/date
mkdir -p "$root/usr/share"
cp -rL /usr/share/mk "$root/usr/share/mk"
mods="$work/kernel/lib/modules/$kver"
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net button evdev; do
  f=$(find "$mods" -name "$m.ko*" | head -n 1)
  [ -n "$f" ] && cp "$f" "$root/lib/modules/"
done
ssh-keygen -q -t ed25519 -N '' -C fruix-vm-test -f "$dir/host_ed25519"
ssh-keygen -q -t ed25519 -N '' -C fruix-vm-test -f "$dir/id_ed25519"
dropbearconvert openssh dropbear "$dir/host_ed25519" "$root/etc/dropbear/dropbear_ed25519_host_key" >/dev/null 2>&1
cp "$dir/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
chmod 700 "$root/root/.ssh"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
printf '/bin/sh\n' >"$root/etc/shells"
cat >"$root/etc/inittab" <<'EOF'
::sysinit:/etc/rc
::shutdown:/bin/umount -a -r
EOF
cat >"$root/etc/rc" <<'EOF'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net button evdev; do
  for f in /lib/modules/$m.ko*; do [ -e "$f" ] && insmod "$f"; done
done
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
echo "fruix-vm: network up"
# The test's "guest that never opens SSH" boots with fruix.nossh on its
# kernel command line.
if grep -q fruix.nossh /proc/cmdline; then
  echo "fruix-vm: not starting sshd (fruix.nossh)"
else
  /sbin/dropbear -R -E -p 22 -r /etc/dropbear/dropbear_ed25519_host_key 2>>/var/log/dropbear.log
  echo "fruix-vm: sshd started"
fi
acpid && echo "fruix-vm: acpid started"
EOF
chmod +x "$root/etc/rc"
mkdir -p "$root/etc/acpi/PWRF"
printf '#!/bin/sh\npoweroff\n' >"$root/etc/acpi/PWRF/00000080"
chmod +x "$root/etc/acpi/PWRF/00000080"
ln -s bin/busybox "$root/init"
rm -f "$dir/disk.qcow2"
qemu-img create -q -f qcow2 "$dir/disk.qcow2" 64M
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$dir/initrd.img"
echo "$version" >"$stamp"
echo "vm image: $dir (kernel $kver)"
