"""cq-portage: one build host, many binary-package flavours, a MUNGE-authenticated queue."""

from setuptools import find_packages, setup

setup(
    name="cq-portage",
    version="0.1.0",
    description="Serial MUNGE-authenticated command queue and binpkg-multi-instance "
    "build orchestration for Gentoo sites",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="GPL-2.0-or-later",
    python_requires=">=3.11",
    packages=find_packages(include=["cq_portage", "cq_portage.*"]),
    install_requires=[
        "pyzmq>=25",
        # cq_portage/cq/cq_pb2.py is gencode 6.31.1 (grpcio-tools 1.80.1's protoc, Makefile:
        # proto): a runtime loads gencode no newer than itself, of its own major version or
        # the one before, so 6.31.1 up to 7.x (Gentoo's stable 6.33 and ~arch 7.x alike).
        # `make test` runs the wire tests on 6.31.1 as well as on the newest.
        "protobuf>=6.31.1,<8",
        "pymunge>=0.1.3",
        "pyyaml>=6",
        "python-daemon>=3",
        "paramiko>=3.2",  # PKey.from_path and .fingerprint
        "portage>=3.0.60",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-timeout>=2", "hypothesis>=6"],
    },
    entry_points={
        "console_scripts": [
            "cq-server = cq_portage.cq.server_cli:main",
            "cq_server = cq_portage.cq.server_cli:main",
            "cq-client = cq_portage.cq.client_cli:main",
            "cq_client = cq_portage.cq.client_cli:main",
            "cq-emerge = cq_portage.emerge.cli:main",
            "cq-emerge-hook = cq_portage.emerge.dedupe_hook:main",
            "cq-build-root = cq_portage.buildroot.cli:main",
        ]
    },
)
