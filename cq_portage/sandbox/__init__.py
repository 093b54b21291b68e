"""Throwaway real parts for tests, benchmarks and the demo: munged, cq-server, Portage prefixes."""
