#!/bin/sh
# build-deb.sh ROOT VERSION GOARCH OUTDIR: turns the tree "make install"
# staged in ROOT (PREFIX=/usr) into OUTDIR/egress_VERSION_ARCH.deb with
# dpkg-deb: control file, conffiles, maintainer scripts, md5sums. Run by
# "make deb"; needs only dpkg (dpkg-shlibdeps, from dpkg-dev, when present,
# computes the libc dependency).
set -eu
root=$1 version=$2 goarch=$3 out=$4
here=$(cd "$(dirname "$0")" && pwd)

case $goarch in
amd64 | arm64 | riscv64 | s390x | loong64) arch=$goarch ;;
386) arch=i386 ;;
arm) arch=armhf ;;
ppc64le) arch=ppc64el ;;
mips64le) arch=mips64el ;;
*) echo "build-deb.sh: no Debian architecture for GOARCH=$goarch" >&2; exit 1 ;;
esac
case $version in
[0-9]*) ;;
*) echo "build-deb.sh: version $version does not start with a digit" >&2; exit 1 ;;
esac
if printf %s "$version" | grep -q '[^0-9A-Za-z.+~]'; then
	echo "build-deb.sh: version $version has characters a native Debian version cannot have" >&2
	exit 1
fi

# Documentation Debian expects of every package.
doc=$root/usr/share/doc/egress
install -d "$doc"
install -m 0644 "$here/copyright" "$doc/copyright"
install -m 0644 "$here/../../README.md" "$doc/README.md"
when=$(date -u -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}" -R)
printf 'egress (%s) unstable; urgency=medium\n\n  * Built from commit %s.\n\n -- %s  %s\n' \
	"$version" "$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)" "${DEB_MAINTAINER:-egress developers <egress@egresskit.invalid>}" "$when" |
	gzip -9n >"$doc/changelog.gz"
chmod 0644 "$doc/changelog.gz"

# libc: the tools use cgo (os/user's NSS lookups); dpkg-shlibdeps gives the
# lowest libc6 they need.
depends="libc6"
if command -v dpkg-shlibdeps >/dev/null && [ "$arch" = "$(dpkg --print-architecture)" ]; then
	tmp=$(mktemp -d)
	mkdir "$tmp/debian"
	printf 'Source: egress\n\nPackage: egress\nArchitecture: any\n' >"$tmp/debian/control"
	bins=$(cd "$root" && echo "$PWD"/usr/bin/*)
	d=$(cd "$tmp" && dpkg-shlibdeps -O $bins 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
	rm -rf "$tmp"
	[ -z "$d" ] || depends=$d
fi

install -d -m 0755 "$root/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" -e "s/@DEPENDS@/$depends/" \
	-e "s/@MAINTAINER@/${DEB_MAINTAINER:-egress developers <egress@egresskit.invalid>}/" \
	"$here/control.in" >"$root/DEBIAN/control"
echo /etc/egress/config.yaml >"$root/DEBIAN/conffiles"
for s in postinst prerm postrm; do
	install -m 0755 "$here/$s" "$root/DEBIAN/$s"
done
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | LC_ALL=C sort | xargs md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"

mkdir -p "$out"
deb=$out/egress_${version}_$arch.deb
# Owned by root whoever builds; file dates clamped to the commit's.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)} \
	dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
