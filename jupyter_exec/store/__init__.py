"""The store: one SQLite file in the user's data directory that keeps every run, the cache of
identical runs, the traces and the env index, each in tables of its own.

WAL mode on a local disk, so a side panel or another kernel can read while a kernel writes.
``database`` is the one connection every table's class shares; ``records`` is the runs table (``RunRecords``).
The file under faults: ``opening`` connects (journal mode, a damaged file moved aside);
``schema`` holds the migrations; ``filesystems`` says where the file may live and how SQLite
may use it there; ``space`` guards free space; ``health`` checks and vacuums; ``salvage``
(with ``pages``) reads what is left of a damaged file.
"""
