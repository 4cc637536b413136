"""The environment cache: build once per content hash, reuse with one lookup, evict LRU.

An index table (``envs``) in the store's SQLite file records each env: hash, target,
path, size, created, last used, uses, builds, status and build log. A hit costs one
SELECT and one UPDATE. Builds of the same hash are serialised by a file lock, so four
kernels (or threads) asking for one new env get one build; the others wait and reuse
it. A failed build is recorded as ``failed`` and never served: the next request tries
again. Runs hold a lease (a file naming their pid) so GC never removes an env in use.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from jupyter_exec._proc import pid_alive
from jupyter_exec.errors import BackendUnavailableError, EnvBuildError, JupyterExecError
from jupyter_exec.store.database import Database

from .builder import BuiltEnv, EnvBuilder, Progress
from .envspec import EnvSpec
from .hashing import env_hash

__all__ = ["EnvCache", "EnvIndex"]

#: The builder of an env's target (``EnvBuilder.target``), to delete it: passed in by the
#: cache's owner (``backends.factory.env_builder_for``), so the cache knows no targets.
BuilderFor = Callable[[str], EnvBuilder]


class EnvIndex(Database):
    """The env cache's index (the ``envs`` table of the store file)."""

    def get(self, hash_: str) -> dict | None:
        row = self._execute("SELECT * FROM envs WHERE hash=?", (hash_,)).fetchone()
        return dict(row) if row else None

    def all(self) -> list[dict]:
        return [dict(r) for r in self._execute("SELECT * FROM envs ORDER BY last_used DESC").fetchall()]

    def start_build(self, hash_: str, target: str, path: Path, spec: str, log: Path) -> None:
        self._execute(
            "INSERT INTO envs (hash, target, path, spec, status, created, builds, build_log)"
            " VALUES (?, ?, ?, ?, 'building', ?, 1, ?) ON CONFLICT(hash) DO UPDATE SET"
            " status='building', builds=builds+1, error=NULL, created=excluded.created",
            (hash_, target, str(path), spec, time.time(), str(log)),
        )

    def finish_build(self, hash_: str, status: str, size: int = 0, error: str | None = None) -> None:
        self._execute("UPDATE envs SET status=?, size=?, error=? WHERE hash=?", (status, size, error, hash_))

    def touch(self, hash_: str) -> None:
        self._execute("UPDATE envs SET last_used=?, uses=uses+1 WHERE hash=?", (time.time(), hash_))

    def remove(self, hash_: str) -> None:
        self._execute("DELETE FROM envs WHERE hash=?", (hash_,))


def _tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class EnvCache:
    """Environments under ``root``, indexed in the store at ``db_path``."""

    def __init__(self, root: Path, db_path: Path, builder_for: BuilderFor) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.index = EnvIndex(db_path)
        self.builder_for = builder_for

    def ensure(self, spec: EnvSpec, builder: EnvBuilder, progress: Progress = lambda _: None) -> BuiltEnv:
        """The built env for ``spec``: from the cache, or built now (once, whoever asks)."""
        hash_ = env_hash(spec, builder.target)
        path = self.root / hash_
        hit = self._ready(hash_, path)
        if hit:
            self.index.touch(hash_)
            return builder.describe(spec, hash_, path)
        with self._build_lock(hash_, progress):
            if self._ready(hash_, path):  # someone else built it while we waited
                self.index.touch(hash_)
                return builder.describe(spec, hash_, path)
            built = self._build(spec, builder, hash_, path, progress)
        self.index.touch(hash_)
        return built

    def _ready(self, hash_: str, path: Path) -> bool:
        row = self.index.get(hash_)
        return bool(row and row["status"] == "ready" and path.is_dir())

    @contextmanager
    def _build_lock(self, hash_: str, progress: Progress) -> Iterator[None]:
        with open(self.root / f"{hash_}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                progress(f"env {hash_[:8]}: another build of this env is running; waiting for it")
                fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _build(self, spec: EnvSpec, builder: EnvBuilder, hash_: str, path: Path, progress: Progress) -> BuiltEnv:
        # Built in place (venv scripts name their own path), under the lock, and only
        # served once marked ready.
        shutil.rmtree(path, ignore_errors=True)
        log = self.root / f"{hash_}.log"
        self.index.start_build(hash_, builder.target, path, json.dumps(spec.describe()), log)
        progress(f"env {hash_[:8]}: building for {builder.target}")
        started = time.monotonic()
        try:
            builder.build(spec, path, log, progress)
        except BaseException as error:
            shutil.rmtree(path, ignore_errors=True)
            message = str(error) if isinstance(error, (EnvBuildError, JupyterExecError)) else repr(error)
            self.index.finish_build(hash_, "failed", error=message.splitlines()[0] if message else "failed")
            if isinstance(error, (EnvBuildError, BackendUnavailableError)) or not isinstance(error, Exception):
                raise  # already says what to do (or is an interrupt)
            raise EnvBuildError(f"building env {hash_[:8]} failed: {message}", log, _tail(log)) from error
        self.index.finish_build(hash_, "ready", size=_tree_size(path))
        progress(f"env {hash_[:8]}: ready in {time.monotonic() - started:.1f} s")
        return builder.describe(spec, hash_, path)

    @contextmanager
    def lease(self, hash_: str) -> Iterator[None]:
        """Mark the env as in use for the duration (GC skips it)."""
        leases = self.root / f"{hash_}.leases"
        leases.mkdir(exist_ok=True)
        ticket = leases / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        ticket.touch()
        try:
            yield
        finally:
            ticket.unlink(missing_ok=True)

    def in_use(self, hash_: str) -> bool:
        leases = self.root / f"{hash_}.leases"
        return any(pid_alive(int(t.name.split("-")[0])) for t in leases.glob("*-*")) if leases.is_dir() else False

    def remove(self, hash_: str) -> None:
        """Delete one env (its image too, for Docker targets) unless a running cell holds it."""
        row = self.index.get(hash_)
        if row is None:
            raise JupyterExecError(f"no env {hash_}; `jupyter-exec envs list` shows them")
        if self.in_use(hash_):
            raise JupyterExecError(f"env {hash_} is in use by a running cell; try again when it ends")
        self.builder_for(row["target"]).delete(Path(row["path"]))
        for extra in (f"{hash_}.log", f"{hash_}.lock"):
            (self.root / extra).unlink(missing_ok=True)
        shutil.rmtree(self.root / f"{hash_}.leases", ignore_errors=True)
        self.index.remove(hash_)

    def gc(self, max_bytes: int | None = None, max_age: float | None = None) -> list[str]:
        """Remove least-recently-used envs until under ``max_bytes``, and any unused for
        ``max_age`` seconds; never one in use, never one building. Returns removed hashes."""
        rows = sorted(self.index.all(), key=lambda r: r["last_used"] or r["created"])
        total = sum(r["size"] for r in rows if r["status"] == "ready")
        removed = []
        now = time.time()
        for row in rows:
            if row["status"] == "building" or self.in_use(row["hash"]):
                continue
            too_old = max_age is not None and now - (row["last_used"] or row["created"]) > max_age
            too_big = max_bytes is not None and total > max_bytes
            if row["status"] == "failed" or too_old or too_big:
                self.remove(row["hash"])
                total -= row["size"] if row["status"] == "ready" else 0
                removed.append(row["hash"])
        return removed
