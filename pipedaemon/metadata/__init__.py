"""Metadata beside the data (title, description, alias, tags, a free dict) on any object a
remote holds and on pipe files.

- fields.py: the record, how an update merges, the storage's limits
- service.py: the daemon's store and the storage's own place (S3 user metadata and tags)
- rpc.py: ``object.get_metadata`` / ``object.set_metadata``, ``pipe.get_metadata`` / ``pipe.set_metadata``
"""
