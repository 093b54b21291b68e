"""The command queue: server, client and wire protocol. Knows nothing about Portage."""
