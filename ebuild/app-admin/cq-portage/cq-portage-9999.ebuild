# Copyright 2026 cq-portage authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

DISTUTILS_USE_PEP517=setuptools
# Upstream supports Python >= 3.11; ::gentoo's Portage and protobuf start at 3.12.
PYTHON_COMPAT=( python3_{12..14} )

inherit distutils-r1 optfeature systemd

DESCRIPTION="One build host, many binpkg flavours: MUNGE-authenticated build queue for Gentoo"
HOMEPAGE="https://github.com/cq-portage/cq-portage"

if [[ ${PV} == 9999 ]]; then
	EGIT_REPO_URI="https://github.com/cq-portage/cq-portage.git"
	inherit git-r3
else
	SRC_URI="https://github.com/cq-portage/cq-portage/archive/refs/tags/v${PV}.tar.gz
		-> ${P}.gh.tar.gz"
	# ::gentoo has no arm64 keyword on dev-python/python-daemon yet.
	KEYWORDS="~amd64 ~x86"
fi

LICENSE="GPL-2+"
SLOT="0"
# The suite starts its own munged and sshd and runs emerge in throwaway prefixes, which
# the build sandbox does not allow; run `make test` in a checkout instead.
RESTRICT="test"

# Keep in step with install_requires in setup.py (tests/packaging checks it).
RDEPEND="
	>=dev-python/paramiko-3.2[${PYTHON_USEDEP}]
	>=dev-python/protobuf-7.35.1[${PYTHON_USEDEP}]
	<dev-python/protobuf-8[${PYTHON_USEDEP}]
	>=dev-python/pymunge-0.1.3[${PYTHON_USEDEP}]
	>=dev-python/python-daemon-3[${PYTHON_USEDEP}]
	>=dev-python/pyyaml-6[${PYTHON_USEDEP}]
	>=dev-python/pyzmq-25[${PYTHON_USEDEP}]
	>=sys-apps/portage-3.0.60[${PYTHON_USEDEP}]
	sys-auth/munge
"

python_install_all() {
	distutils-r1_python_install_all

	# cq-server, the build host's service
	newinitd etc/init.d/cq-server cq-server
	newconfd etc/conf.d/cq-server cq-server
	systemd_dounit etc/systemd/cq-server.service
	insinto /etc/logrotate.d
	newins etc/logrotate.d/cq-server cq-server

	# Example configs, CONFIG_PROTECTed: cq-server's and cq-emerge's group profiles
	insinto /etc/cq
	doins etc/cq/cq-server.yaml
	insinto /etc/cq-portage
	doins etc/cq-portage/cq-portage.yaml

	# Clients: the nightly sync-and-update job and the Portage postsync hook
	insinto /etc/cron.d
	newins etc/cron.d/cq-portage cq-portage
	exeinto /usr/libexec/cq-portage
	doexe etc/libexec/cq-portage-nightly
	exeinto /etc/portage/postsync.d
	newexe etc/portage/postsync.d/cq-portage cq-portage
	insinto /etc/logrotate.d
	newins etc/logrotate.d/cq-portage cq-portage

	keepdir /var/lib/cq /var/log/cq /var/log/cq-portage
	fperms 0750 /var/lib/cq /var/log/cq
}

pkg_postinst() {
	if [[ -z ${REPLACING_VERSIONS} ]]; then
		elog "Every host (build host and clients) needs the same MUNGE key:"
		elog "  /etc/munge/munge.key, owner munge:munge, mode 0400, then start munged."
		elog "Build host: edit /etc/cq/cq-server.yaml, then"
		elog "  rc-update add cq-server default && rc-service cq-server start"
		elog "  (systemd: systemctl enable --now cq-server)"
		elog "Clients: describe the groups, and this host's (host: {groups: [...]}), in"
		elog "  /etc/cq-portage/cq-portage.yaml, then try cq-emerge --pretend."
		elog "/etc/cron.d/cq-portage syncs and updates this host's groups at 03:30 every"
		elog "night (log: /var/log/cq-portage/nightly.log); comment it out to opt out."
	fi
	optfeature "the nightly job in /etc/cron.d/cq-portage" virtual/cron
	optfeature "rotating the logs in /var/log/cq and /var/log/cq-portage" app-admin/logrotate
}
