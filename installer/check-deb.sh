#!/usr/bin/env bash
# Check the built Debian package: contents, permissions, control fields, conffiles, lintian, and
# an install -> doctor -> upgrade (config edit kept) -> remove -> purge cycle in a throwaway
# dpkg root. Usage: installer/check-deb.sh target/debian/provisioning-station_X_ARCH.deb NEWER.deb
set -euo pipefail
deb=$1
newer=$2
fail() { echo "check-deb: FAIL: $*" >&2; exit 1; }
ok() { echo "check-deb: ok: $*"; }

contents=$(dpkg-deb -c "$deb")
for f in ./usr/bin/station \
         ./etc/provisioning-station/station.toml \
         ./lib/udev/rules.d/60-provisioning-station.rules \
         ./usr/share/applications/provisioning-station.desktop \
         ./usr/share/provisioning-station/kiosk/provisioning-station-kiosk.desktop \
         ./usr/share/icons/hicolor/64x64/apps/provisioning-station.png \
         ./usr/share/icons/hicolor/256x256/apps/provisioning-station.png \
         ./usr/share/provisioning-station/sounds/pass.wav \
         ./usr/share/provisioning-station/demo/group-key.txt \
         ./usr/share/doc/provisioning-station/copyright; do
    grep -q " $f\$" <<<"$contents" || fail "$f is not in the package"
done
ok "file list"
grep -Eq '^-rwxr-xr-x 0/0 .* \./usr/bin/station$' <<<"$contents" || fail "usr/bin/station is not 0755 root:root"
if grep -E '^-' <<<"$contents" | grep -v '\./usr/bin/station$' | grep -Ev '^-rw-r--r-- 0/0' | grep -q .; then
    fail "a data file is not 0644 root:root"
fi
ok "permissions"

# The shipped binary carries no debug information or symbol table (lintian: unstripped-binary).
unpacked=$(mktemp -d)
dpkg-deb -x "$deb" "$unpacked"
bin="$unpacked/usr/bin/station"
if readelf -S "$bin" | grep -Eq '\.debug_|\.symtab'; then
    fail "usr/bin/station is not stripped (debug or symbol sections present)"
fi
size=$(stat -c %s "$bin")
[ "$size" -lt $((64 * 1024 * 1024)) ] || fail "usr/bin/station is $size bytes: not stripped?"
rm -rf "$unpacked"
ok "binary stripped ($((size / 1024 / 1024)) MiB)"

field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = provisioning-station ] || fail "Package is $(field Package)"
[ -n "$(field Version)" ] || fail "no Version"
[ "$(field Architecture)" = "$(dpkg --print-architecture)" ] || fail "Architecture is $(field Architecture)"
[ "$(field Section)" = electronics ] || fail "Section is $(field Section)"
depends=$(field Depends)
for lib in libc6 libtss2-esys libudev1 adduser; do
    grep -q "$lib" <<<"$depends" || fail "Depends lacks $lib: $depends"
done
ok "control fields (Depends: $depends)"

conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)
grep -qx /etc/provisioning-station/station.toml <<<"$conffiles" || fail "station.toml is not a conffile"
control=$(dpkg-deb --ctrl-tarfile "$deb" | tar -t)
grep -q '^./postinst$' <<<"$control" || fail "no postinst"
grep -q '^./postrm$' <<<"$control" || fail "no postrm"
ok "conffiles and maintainer scripts"

if command -v lintian >/dev/null; then
    lintian --fail-on error --suppress-tags-from-file /dev/null "$deb" || fail "lintian reports errors"
    ok "lintian (no errors)"
else
    fail "lintian is not installed (make test installs it)"
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/var/lib/dpkg/updates" "$root/var/lib/dpkg/info"
touch "$root/var/lib/dpkg/status"
# The throwaway root has no other packages: dependencies are forced (dpkg warns about each).
dpkg_root() {
    dpkg --root="$root" --force-script-chrootless --force-depends --log=/dev/null "$@" >"$root/dpkg.out" 2>&1 \
        || { cat "$root/dpkg.out" >&2; fail "dpkg $*"; }
}

dpkg_root -i "$deb"
[ -x "$root/usr/bin/station" ] || fail "install: no station binary"
[ -d "$root/var/lib/provisioning-station/exports" ] || fail "install: postinst made no data directory"
ok "install"

# Run the installed program against the installed configuration, paths moved into the root.
cfg="$root/tmp-station.toml"
sed -e "s|/var/lib/provisioning-station|$root/var/lib/provisioning-station|g" \
    -e "s|/usr/share/provisioning-station|$root/usr/share/provisioning-station|g" \
    "$root/etc/provisioning-station/station.toml" > "$cfg"
"$root/usr/bin/station" --config "$cfg" doctor >/dev/null || fail "doctor fails on the installed configuration"
"$root/usr/bin/station" --config "$cfg" provision --count 2 >/dev/null || fail "the installed station cannot provision"
ok "installed station: doctor and provisioning"

echo "# edited by the station engineer" >> "$root/etc/provisioning-station/station.toml"
dpkg_root --force-confold -i "$newer"
grep -q "edited by the station engineer" "$root/etc/provisioning-station/station.toml" || fail "upgrade lost the config edit"
[ -f "$root/var/lib/provisioning-station/station.db" ] || fail "upgrade lost the database"
ok "upgrade keeps the configuration edit and the database"

dpkg_root -r provisioning-station
[ ! -e "$root/usr/bin/station" ] || fail "remove left the binary"
[ -f "$root/etc/provisioning-station/station.toml" ] || fail "remove deleted the configuration"
ok "remove"

dpkg_root -P provisioning-station
[ ! -e "$root/etc/provisioning-station/station.toml" ] || fail "purge left the configuration"
[ -f "$root/var/lib/provisioning-station/station.db" ] || fail "purge deleted the database"
ok "purge removes the configuration, keeps the database and exports"
echo "check-deb: 8 passed, 0 failed"
