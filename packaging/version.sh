#!/bin/sh
# Prints the version the packages are built with: the top entry of
# packaging/debian/changelog ("dch -v 0.1.1" sets it), without an epoch or a
# Debian revision.
set -eu
cd "$(dirname "$0")/.."
sed -n '1s/^heartwire (\([^)]*\)).*/\1/p' packaging/debian/changelog | sed -e 's/^[0-9]*://' -e 's/-[^-]*$//'
