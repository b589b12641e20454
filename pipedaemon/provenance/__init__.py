"""Provenance: directed links between object versions, and walks over them.

- refs.py: ``remote:key`` / ``pipe:name/file`` refs and the versions they name
- graph.py: the links in the daemon's state, relationships and lineage (cycles ended)
- rpc.py: ``provenance.link`` / ``provenance.relationships`` / ``provenance.lineage``
- record.py: what a pull or push with ``record=True`` links
"""
