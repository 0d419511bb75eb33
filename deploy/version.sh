#!/bin/sh
# Prints the version of this checkout, in a form Debian orders correctly:
#   HEAD tagged vX.Y.Z                    X.Y.Z
#   later commits, or no tag at all       X.Y.Z+git<commit time>.<commit>  (0.0.0 without a tag)
#   uncommitted changes to tracked files  the above with .dirty
#   not a git checkout                    0.0.0+unknown
# The commit time (UTC, YYYYmmddHHMMSS) makes successive snapshots sort in
# order. `make VERSION=...` overrides all of this.
set -eu
cd "$(dirname "$0")/.."
if ! git rev-parse --git-dir >/dev/null 2>&1; then
	echo 0.0.0+unknown
	exit 0
fi
tag=$(git describe --tags --abbrev=0 --match 'v[0-9]*' 2>/dev/null || true)
base=$(printf %s "${tag#v}" | tr - "~")
if [ -z "$tag" ]; then
	base=0.0.0
fi
if [ -n "$tag" ] && [ "$(git rev-list -n1 "$tag")" = "$(git rev-parse HEAD)" ]; then
	v=$base
else
	when=$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y%m%d%H%M%S HEAD)
	v=$base+git$when.$(git rev-parse --short=7 HEAD)
fi
if ! git diff --quiet HEAD -- 2>/dev/null; then
	v=$v.dirty
fi
echo "$v"
