#!/usr/bin/env bash
# TEST DOUBLE: the stand-in for the official debian:bookworm-slim image, for
# the compose demo on podman, `make compose-up` and the compose suite, where
# registry images cannot be fetched. tests/compose/lib.sh imports the tree
# this makes as debian:bookworm-slim in a podman store of the demo's own,
# never in the machine's.
#
#   build.sh ROOT    makes the tree in ROOT (which must not exist); prints
#                    nothing but debootstrap's errors
#
# Like the official image (made by debuerreotype), it is Debian's minbase
# variant from deb.debian.org, with the official image's "slim" dpkg
# excludes and its dpkg, apt and policy-rc.d settings: the same packages,
# not the same bytes. The Dockerfile needs apt-get and the archive only.
set -euo pipefail

root=${1:?usage: build.sh ROOT}
mirror=http://deb.debian.org/debian

# dpkg without fsync, as in the official image, from the start: a build is
# redone rather than repaired, and this saves a quarter of the time.
mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
echo force-unsafe-io >"$root/etc/dpkg/dpkg.cfg.d/docker-apt-speedup"
debootstrap --variant=minbase --components=main \
    --keyring=/usr/share/keyrings/debian-archive-keyring.gpg bookworm "$root" "$mirror" >"$root.log" 2>&1 || {
    tail -n 20 "$root.log" >&2
    exit 1
}
rm -f "$root.log"

# The official image's sources (deb822): updates and security, from the
# same host.
rm -f "$root/etc/apt/sources.list"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES

# "slim": no manuals, documentation (but copyrights) or translations.
cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
DPKG
find "$root/usr/share/doc" -mindepth 2 -not -name copyright -not -type d -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root"/usr/share/{man,groff,info,lintian,linda,locale}/*

# No service started by a package's installation, as in the official image.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"

# apt as in the official image: no .deb kept after an install, no
# translations fetched, suggested packages never autoremoved.
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$root/etc/apt/apt.conf.d/docker-autoremove-suggests"

# What debootstrap copied from this machine, or left behind.
rm -f "$root/etc/hostname" "$root/etc/resolv.conf"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/* "$root"/tmp/*
: >"$root/etc/machine-id"
