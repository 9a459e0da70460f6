#!/usr/bin/env bash
# Builds the Debian package from a configured and built build folder and checks it: the files it
# installs (binary, desktop entry, icon), its control fields, and that the dependencies declared
# cover the libraries the workbench links (Qt 6 Widgets, QCustomPlot, SQLite).
#   installers/check_deb.sh BUILD_DIR
set -euo pipefail

build="$(cd "${1:?usage: check_deb.sh BUILD_DIR}" && pwd)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

(cd "$build" && cpack -G DEB -B "$out" >"$out/cpack.log" 2>&1) || {
    cat "$out/cpack.log"
    echo "check_deb: cpack failed" >&2
    exit 1
}
deb=$(ls "$out"/lowbit_*.deb 2>/dev/null | head -1)
[[ -n "$deb" ]] || { echo "check_deb: no lowbit_*.deb in $out" >&2; exit 1; }

status=0
fail() { echo "check_deb: $*" >&2; status=1; }

contents=$(dpkg-deb -c "$deb")
for path in ./usr/bin/lowbit ./usr/share/applications/lowbit.desktop \
    ./usr/share/icons/hicolor/scalable/apps/lowbit.svg; do
    grep -q " $path\$" <<<"$contents" || fail "missing $path"
done
grep -q -- "-rwxr-xr-x .* ./usr/bin/lowbit\$" <<<"$contents" || fail "/usr/bin/lowbit is not executable"

[[ "$(dpkg-deb -f "$deb" Package)" == lowbit ]] || fail "Package is not lowbit"
[[ -n "$(dpkg-deb -f "$deb" Version)" ]] || fail "no Version"
[[ "$(dpkg-deb -f "$deb" Architecture)" == "$(dpkg --print-architecture)" ]] || fail "wrong Architecture"
depends=$(dpkg-deb -f "$deb" Depends)
echo "Depends: $depends"
for lib in libqt6widgets6 libqt6gui6 libqt6core6 libqcustomplot2.1-qt6 libsqlite3-0 libstdc++6 \
    hicolor-icon-theme; do
    # Compare package names exactly (a name like libstdc++6 is not a pattern).
    sed -E 's/ \([^)]*\)//g; s/, /\n/g; s/ *\| */\n/g' <<<"$depends" | grep -Fxq "$lib" ||
        fail "Depends lacks $lib"
done

# The desktop entry starts the installed binary and names the installed icon.
entry=$(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/share/applications/lowbit.desktop)
grep -qx "Exec=lowbit" <<<"$entry" || fail "desktop entry: Exec is not lowbit"
grep -qx "Icon=lowbit" <<<"$entry" || fail "desktop entry: Icon is not lowbit"
if command -v desktop-file-validate >/dev/null; then
    desktop-file-validate <(echo "$entry") || fail "desktop entry does not validate"
fi

# The packaged binary runs from where the package puts it: the headless help, then the workbench
# window (offscreen) still up after 3 s, i.e. stopped by the timeout rather than failing to start.
root="$out/root"
dpkg-deb -x "$deb" "$root"
"$root/usr/bin/lowbit" --help >/dev/null || fail "lowbit --help failed"
rc=0
HOME="$out" XDG_DATA_HOME="$out/data" XDG_CONFIG_HOME="$out/config" QT_QPA_PLATFORM=offscreen \
    timeout 3 "$root/usr/bin/lowbit" >"$out/gui.log" 2>&1 || rc=$?
((rc == 124)) || { cat "$out/gui.log"; fail "the workbench exited with $rc instead of running"; }

((status == 0)) && echo "check_deb: $(basename "$deb") ok"
exit $status
