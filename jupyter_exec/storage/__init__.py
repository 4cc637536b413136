"""The store file under faults: opening it (journal mode, migrations, a damaged file moved aside),
room on its disk, its health, and salvage of a damaged one.

``opening`` connects; ``schema`` holds the migrations; ``filesystems`` says where the file
may live and how SQLite may use it there; ``space`` guards free space; ``health`` checks
and vacuums; ``salvage`` (with ``pages``) reads what is left of a damaged file.
"""
