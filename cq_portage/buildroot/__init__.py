"""cq-build-root: one build root per group, with its own vdb, that build jobs run inside.

A root is ROOTS/GROUP: a chroot on a real Gentoo build host (seeded from a stage3 or from
the host), a Gentoo prefix in the test sandbox. Everything but how a command enters the
root (enter.py) is one code path for both kinds: seeding (seed.py), the Portage config
copied from the host's (config.py, read through Portage's API in host.py), locking
(lock.py), running with signals forwarded (runner.py), and removal (remove.py).
This is emerge-side code: it may import portage; cq_portage.cq must not import it.
"""
