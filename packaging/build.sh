#!/usr/bin/env bash
# Builds the heartwire .deb or .rpm from this source tree into dist/.
#
#   packaging/build.sh deb    # needs debhelper, dh-python, pybuild-plugin-pyproject
#   packaging/build.sh rpm    # needs rpmbuild (rpm), python3-build, python3-setuptools
#
# The build runs on a copy of the tree (tracked and new files, not ignored ones) in
# build/, so the working tree is never touched.
set -euo pipefail
cd "$(dirname "$0")/.."

# A distribution package is built with the distribution's python3, not whatever
# interpreter (pyenv, a virtualenv) comes first on the caller's PATH.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

kind=${1:?usage: packaging/build.sh deb|rpm}
# One version for both packages: the top entry of the packaging changelog (what
# "dch -v" sets). The copy that is built gets it as agent.__version__ (which the
# wheel's metadata reads), so "heartwire --version" tells the package's version.
version=$(packaging/version.sh)
stage=build/package
tree=$stage/heartwire-$version

rm -rf "$stage"
mkdir -p "$tree" dist
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$tree"
else
    tar --exclude=./.venv --exclude=./build --exclude=./dist --exclude=.git \
        --exclude=__pycache__ --exclude='.*_cache' -cf - . | tar -xf - -C "$tree"
fi

sed -i "s/^__version__ = .*/__version__ = \"$version\"/" "$tree/agent/__init__.py"

case $kind in
deb)
    cp -r packaging/debian "$tree/debian"
    (cd "$tree" && dpkg-buildpackage --build=binary --no-sign)
    # heartwire and heartwire-central, named with the full Debian version.
    debs=$(cd "$stage" && ls heartwire_*_all.deb heartwire-central_*_all.deb)
    for deb in $debs; do mv "$stage/$deb" dist/; done
    printf 'built dist/%s\n' $debs
    ;;
rpm)
    topdir=$PWD/$stage/rpmbuild
    mkdir -p "$topdir"/{SOURCES,SPECS,BUILD,RPMS,SRPMS}
    tar -C "$stage" -czf "$topdir/SOURCES/heartwire-$version.tar.gz" "heartwire-$version"
    # --nodeps: the BuildRequires name Fedora packages, which Debian's rpm
    # database does not know; the fallbacks in the spec stand in for them.
    rpmbuild -bb --nodeps --define "_topdir $topdir" --define "version $version" packaging/rpm/heartwire.spec
    mv "$topdir"/RPMS/noarch/heartwire-"$version"-*.noarch.rpm \
       "$topdir"/RPMS/noarch/heartwire-central-"$version"-*.noarch.rpm dist/
    ls dist/heartwire-"$version"-*.noarch.rpm dist/heartwire-central-"$version"-*.noarch.rpm
    ;;
*)
    echo "usage: packaging/build.sh deb|rpm" >&2
    exit 2
    ;;
esac
