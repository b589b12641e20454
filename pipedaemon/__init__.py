"""pipedaemon: the per-user transfer daemon, its storage backends, state and CLI."""

__version__ = "0.1.0"
