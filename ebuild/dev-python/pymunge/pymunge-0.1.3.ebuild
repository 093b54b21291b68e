# Copyright 2026 cq-portage authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

DISTUTILS_USE_PEP517=setuptools
PYTHON_COMPAT=( python3_{12..14} )

inherit distutils-r1 pypi

DESCRIPTION="Python interface to MUNGE (libmunge through ctypes)"
HOMEPAGE="
	https://github.com/nomadictype/pymunge
	https://pypi.org/project/pymunge/
"

LICENSE="|| ( GPL-3+ LGPL-3+ )"
SLOT="0"
KEYWORDS="~amd64 ~arm64 ~x86"
# The tests create and decode real credentials, so they need a running munged with a key,
# which the build sandbox cannot provide.
RESTRICT="test"

# Loaded at run time with ctypes (find_library("munge")), so not a build dependency.
RDEPEND="sys-auth/munge"
