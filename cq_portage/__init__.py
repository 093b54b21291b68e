"""cq-portage."""
