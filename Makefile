# make test  - install what the suite needs (virtualenv, munge), then run it
# make demo  - build a throwaway sandbox and run cq-emerge for two groups against it
#              (packages over a signed HTTP binhost; DEMO_ARGS=--delivery=shared: shared PKGDIR)
# make bench - the benchmarks in bench/ (figures and ratios, not pass/fail)
# make dist  - the release tarball dist/cq_portage-VERSION.tar.gz (reproducible sdist)
# make manifest - its DIST line in the overlay's app-admin/cq-portage/Manifest

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: test demo bench sysdeps venv proto clean dist manifest

# System packages: munge for MUNGE, openssh-server for the SSH tests, a static busybox
# for the chroot build-root tests (a minimal chroot of one binary), rsync for the tree
# mirror test (the build host serving its repository to the clients), nginx serving the
# binhost and gnupg signing its packages, wget (Portage's FETCHCOMMAND) fetching them and
# openssl making the HTTPS test's throwaway CA (binhost tests, demo and bench), e2fsprogs
# making the ext4 of the failing-disk (EIO) test.
sysdeps:
	@missing=""; \
	command -v munged >/dev/null 2>&1 || [ -x /usr/sbin/munged ] || missing="$$missing munge"; \
	command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || missing="$$missing openssh"; \
	command -v rsync >/dev/null 2>&1 || missing="$$missing rsync"; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	{ command -v gpg && command -v gpg-agent && command -v gpgconf; } >/dev/null 2>&1 || missing="$$missing gnupg"; \
	command -v wget >/dev/null 2>&1 || missing="$$missing wget"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	command -v mkfs.ext4 >/dev/null 2>&1 || [ -x /sbin/mkfs.ext4 ] || missing="$$missing e2fsprogs"; \
	{ [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || missing="$$missing busybox-static"; \
	$(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$$missing python-venv"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	echo ">>> installing system packages:$$missing"; \
	if command -v apt-get >/dev/null 2>&1; then \
		pkgs=$$(echo "$$missing" | sed -e 's/openssh/openssh-server/' -e 's/python-venv/python3-venv/' -e 's/nginx/nginx-light/'); \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$pkgs; \
	elif command -v emerge >/dev/null 2>&1; then \
		pkgs=$$(echo "$$missing" | sed -e 's/munge/sys-auth\/munge/' -e 's/openssh/net-misc\/openssh/' -e 's/python-venv//' -e 's/busybox-static/sys-apps\/busybox/' -e 's/rsync/net-misc\/rsync/' -e 's/nginx/www-servers\/nginx/' -e 's/gnupg/app-crypt\/gnupg/' -e 's/wget/net-misc\/wget/' -e 's/openssl/dev-libs\/openssl/' -e 's/e2fsprogs/sys-fs\/e2fsprogs/'); \
		case "$$missing" in *busybox-static*) use=/etc/portage/package.use; \
			[ -d $$use ] && use=$$use/cq-portage-tests; echo 'sys-apps/busybox static' >> $$use;; esac; \
		emerge --update --newuse --quiet $$pkgs; \
	else echo "no apt-get or emerge: install$$missing by hand" >&2; exit 1; fi

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 'setuptools>=69.3'  # 69.3+ names the sdist cq_portage-*
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# The oldest protobuf runtime setup.py accepts, in a venv of its own; $(VENV) has the
# newest. cq_pb2.py must load and work on both: the wire and job tests run on this one too.
PROTOBUF_OLDEST := 6.31.1
VENV_OLDEST ?= .venv-protobuf-$(PROTOBUF_OLDEST)
OLDEST_TESTS := tests/cq/test_cq_proto.py tests/cq/test_cq_wire.py tests/cq/test_cq_jobs.py

$(VENV_OLDEST)/.installed: setup.py
	$(PYTHON) -m venv $(VENV_OLDEST)
	$(VENV_OLDEST)/bin/python -m pip install -q --upgrade pip
	$(VENV_OLDEST)/bin/python -m pip install -q -e '.[test]' 'protobuf==$(PROTOBUF_OLDEST)'
	touch $@

# Both runs always run; the status is the first failure's.
test: sysdeps venv $(VENV_OLDEST)/.installed
	@status=0; \
	$(PY) -m pytest $(PYTEST_ARGS) || status=$$?; \
	echo ">>> the same cq_pb2.py on protobuf $(PROTOBUF_OLDEST), the oldest runtime accepted"; \
	$(VENV_OLDEST)/bin/python -m pytest -q $(OLDEST_TESTS) || { s=$$?; [ $$status -ne 0 ] || status=$$s; }; \
	exit $$status

demo: sysdeps venv
	$(PY) -m cq_portage.demo $(DEMO_ARGS)

bench: sysdeps venv
	@for b in bench/*.py; do echo ">>> $$b"; $(PY) $$b || exit 1; done

# Regenerate the protobuf module, with a protoc whose gencode (6.31.1) loads on protobuf
# 6.31.1 to 7.x: setup.py's lower bound must be this gencode version (tests/cq checks it).
# Its own venv: grpcio-tools 1.80 wants protobuf < 7, which must not touch $(VENV).
PROTOC_TOOLS := grpcio-tools==1.80.1
VENV_PROTO ?= .venv-proto
proto:
	$(PYTHON) -m venv $(VENV_PROTO)
	$(VENV_PROTO)/bin/python -m pip install -q '$(PROTOC_TOOLS)'
	cd cq_portage/cq && ../../$(VENV_PROTO)/bin/python -m grpc_tools.protoc -I. \
		--python_out=. --pyi_out=. cq.proto

# What the release ebuild fetches; upload it to the vVERSION release unchanged.
dist: venv
	$(PY) tools/dist.py sdist

manifest: dist
	$(PY) tools/dist.py manifest

clean:
	rm -rf $(VENV) $(VENV_OLDEST) $(VENV_PROTO) build dist *.egg-info .pytest_cache .hypothesis
