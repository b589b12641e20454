"""The protocol both sides speak: error codes and classes (errors), the wire Structs and line
framing (wire), where the socket and home live (paths), and the rules for pipe file names
(pipefiles).

This package imports nothing else of the project (only msgspec and the standard library), so
the daemon imports it without loading the client, its jobs or the autostart machinery. It stays
at the bottom of the layers: nothing in here may import ``pipedaemon_sdk`` outside ``protocol``.
"""
