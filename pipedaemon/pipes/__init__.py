"""Pipes: d6tpipe's named data pipes, run by the daemon, with cached remote scans.

- settings.py: pipe settings, parent inheritance, profile config
- store.py: pipes and config in SQLite, resolving a pipe, the PipeLocal mirror
- scan.py: remote listings cached in SQLite and shared between pipes
- syncstate.py: each file's state at its last sync
- plan.py: what a pull or push moves (modes, files, nrecent, conflicts)
- service.py / sync.py / manage.py: views, the pull and push jobs, deletes and imports
- rpc.py: the ``pipe.*`` methods and the pull and push job kinds
"""
