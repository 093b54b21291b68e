# Copyright 2026 cq-portage authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

DISTUTILS_USE_PEP517=setuptools
# Upstream supports Python >= 3.11; ::gentoo's Portage and protobuf start at 3.12.
PYTHON_COMPAT=( python3_{12..14} )
# cq-server's job store is SQLite (Python's sqlite3 module).
PYTHON_REQ_USE="sqlite"

inherit distutils-r1 optfeature systemd

DESCRIPTION="One build host, many binpkg flavours: MUNGE-authenticated build queue for Gentoo"
HOMEPAGE="https://github.com/cq-portage/cq-portage"

if [[ ${PV} == 9999 ]]; then
	EGIT_REPO_URI="https://github.com/cq-portage/cq-portage.git"
	inherit git-r3
else
	# The release tarball is `make dist` (an sdist with etc/, bin/, ebuild/ and tests/),
	# uploaded to the release; `make manifest` writes its DIST line.
	SRC_URI="https://github.com/cq-portage/cq-portage/releases/download/v${PV}/cq_portage-${PV}.tar.gz"
	S="${WORKDIR}/cq_portage-${PV}"
	# ::gentoo has no arm64 keyword on dev-python/python-daemon yet.
	KEYWORDS="~amd64 ~x86"
fi

LICENSE="GPL-2+"
SLOT="0"

# Keep in step with install_requires in setup.py (tests/packaging checks it).
RDEPEND="
	>=dev-python/paramiko-3.2[${PYTHON_USEDEP}]
	>=dev-python/protobuf-6.31.1[${PYTHON_USEDEP}]
	<dev-python/protobuf-8[${PYTHON_USEDEP}]
	>=dev-python/pymunge-0.1.3[${PYTHON_USEDEP}]
	>=dev-python/python-daemon-3[${PYTHON_USEDEP}]
	>=dev-python/pyyaml-6[${PYTHON_USEDEP}]
	>=dev-python/pyzmq-25[${PYTHON_USEDEP}]
	>=sys-apps/portage-3.0.60[${PYTHON_USEDEP}]
	sys-auth/munge
"
BDEPEND="
	test? (
		dev-python/hypothesis[${PYTHON_USEDEP}]
		dev-python/packaging[${PYTHON_USEDEP}]
		dev-python/pytest-timeout[${PYTHON_USEDEP}]
	)
"

distutils_enable_tests pytest

# The suites that need no munged, sshd or throwaway Portage prefix: the build sandbox
# allows none of those. The rest (the server, the queue, cq-emerge against real emerge)
# is `make test` in a checkout. tests/packaging checks that these need none of them.
CQ_PORTAGE_TESTS=(
	tests/packaging/test_packaging_ebuild.py
	tests/packaging/test_packaging_service.py
	tests/packaging/test_packaging_nightly.py
	tests/cq/test_cq_proto.py
	tests/cq/test_cq_schedule.py
	tests/cq/test_cq_wire.py
	tests/emerge/test_emerge_fleet_config.py
	tests/emerge/test_emerge_logs.py
	tests/emerge/test_emerge_profiles.py
	tests/emerge/test_emerge_progress.py
	tests/test_layering.py
)

python_test() {
	epytest "${CQ_PORTAGE_TESTS[@]}"
}

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

	# Clients: the nightly sync-and-update job (cron line and timer both off until the
	# admin turns one on) and the Portage postsync hook (idle until host: {groups: ...})
	insinto /etc/cron.d
	newins etc/cron.d/cq-portage cq-portage
	systemd_dounit etc/systemd/cq-portage-nightly.service etc/systemd/cq-portage-nightly.timer
	exeinto /usr/libexec/cq-portage
	doexe etc/libexec/cq-portage-nightly
	exeinto /etc/portage/postsync.d
	newexe etc/portage/postsync.d/cq-portage cq-portage
	insinto /etc/logrotate.d
	newins etc/logrotate.d/cq-portage cq-portage

	# One tree for the whole site: the build host serves its ::gentoo over rsync and syncs
	# before the clients, which sync from it (examples, README "Build host and clients")
	systemd_dounit etc/systemd/cq-portage-sync.service etc/systemd/cq-portage-sync.timer
	insinto /usr/share/cq-portage
	newins etc/rsync/rsyncd-mirror.conf rsyncd-mirror.conf
	newins etc/portage/repos.conf/from-build-host.conf repos.conf-from-build-host

	keepdir /var/lib/cq /var/log/cq /var/log/cq-portage
	fperms 0750 /var/lib/cq /var/log/cq
}

pkg_postinst() {
	if [[ -z ${REPLACING_VERSIONS} ]]; then
		elog "Every host (build host and clients) needs the same MUNGE key:"
		elog "  /etc/munge/munge.key, copied before munged first starts; OpenRC's munged"
		elog "  sets it to root:munge 0640, elsewhere make it munge:munge 0400."
		elog "Build host: edit /etc/cq/cq-server.yaml, then"
		elog "  rc-update add cq-server default && rc-service cq-server start"
		elog "  (systemd: systemctl enable --now cq-server)"
		elog "Clients: describe the groups, and this host's (host: {groups: [...]}), in"
		elog "  /etc/cq-portage/cq-portage.yaml, then try cq-emerge --pretend."
		elog "  Until host: is set, nothing here updates this host by itself."
		elog "Nightly sync and update (off until you turn it on, log:"
		elog "  /var/log/cq-portage/nightly.log): remove the '#' before the job line in"
		elog "  /etc/cron.d/cq-portage, or systemctl enable --now cq-portage-nightly.timer"
	fi
	optfeature "the nightly job in /etc/cron.d/cq-portage (a cron that reads /etc/cron.d)" \
		sys-process/cronie sys-process/systemd-cron
	optfeature "rotating the logs in /var/log/cq and /var/log/cq-portage" app-admin/logrotate
}
