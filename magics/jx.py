"""``%jx``: the kernel's runs, logs, cancel, envs, the cache of identical runs, experiment trees,
resources, doctor and policy."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import magic_arguments

from jupyter_exec.cancel_watch import cancel_elsewhere
from jupyter_exec.doctor import diagnose
from jupyter_exec.errors import JupyterExecError
from jupyter_exec.manager import Manager
from jupyter_exec.policy import policy_report
from jupyter_exec.reports import cache_table, envs_table, run_line, runs_table, sessions_table
from jupyter_exec.resources import format_report, resources_report
from jupyter_exec.stats import phase_stats, stats_text
from jupyter_exec.store.records import decoded
from jupyter_exec.timeline import breakdown, parse
from jupyter_exec.trace.explore import trace_tables
from jupyter_exec.trace.view import render
from jupyter_exec.units import format_bytes

from .cells import background_runs, widgets_wanted
from .options import env_options, parse_line, runtime_env, usage_errors, without_comment

__all__ = ["JxMagics"]


@magic_arguments()
@env_options
def jx_env(line: str) -> None:
    """%jx env [options]: the runtime env every run of this kernel inherits."""


@magics_class
class JxMagics(Magics):
    """``%jx COMMAND``, on the kernel's ``Manager``."""

    def __init__(self, shell: Any, manager: Manager) -> None:
        super().__init__(shell)
        self.manager = manager

    @line_magic
    @usage_errors(JupyterExecError)
    def jx(self, line: str) -> Any:
        """%jx runs [N] [--all] | show N | logs N | cancel N | wait N [SECONDS] | stats [N] | sessions | end NAME |
        fork A B | tree [NAME] [--live] | resources | doctor | policy | envs | env | cache [size | clear [KEY]]"""
        command, _, rest = without_comment(line).partition(" ")
        handler = getattr(self, f"_jx_{command}", None)
        if handler is None:
            raise UsageError(
                f"%jx {command}: unknown command; use one of: runs, show N, logs N, cancel N, wait N, stats, "
                "sessions, end NAME, fork A B, tree, resources, doctor, policy, envs, env, cache"
            )
        return handler(rest.strip())

    def _run_id(self, text: str, command: str) -> int:
        if not text.isdigit():
            raise UsageError(f"%jx {command} needs a run id, e.g. %jx {command} 12 (see %jx runs)")
        return int(text)

    def _jx_runs(self, rest: str) -> Any:
        """The newest N runs (50), a map as one row; ``--all``: every column."""
        words = rest.split()
        every_column = "--all" in words
        limit = [word for word in words if word != "--all"]
        if len(limit) > 1 or (limit and not limit[0].isdigit()):
            raise UsageError(f"%jx runs [N] [--all]: cannot read {rest!r}; e.g. %jx runs 20 --all")
        return runs_table(self.manager.records, int(limit[0]) if limit else 50, every_column=every_column)

    def _jx_show(self, rest: str) -> None:
        """Every column of run N, a host-list run's connections with it (each with its verdict and
        bytes); a map's batches after it, one line each."""
        run_id = self._run_id(rest, "show")
        row = self.manager.records.get(run_id)
        if row is None:
            raise UsageError(f"no run {rest}; `%jx runs` lists them")
        connections = self.manager.connections.of(run_id)
        shown = {**decoded(row), **({"connections": connections} if connections else {})}
        print(json.dumps(shown, indent=2, default=str))
        line = breakdown(*parse(row.get("timeline")))
        if line:
            print(f"timeline {line}")
        batches = self.manager.records.batches({run_id}).get(run_id, [])
        if batches:
            print(f"{len(batches)} batches (%jx logs N for one's output):")
            print("\n".join(f"  {run_line(batch)}" for batch in batches))

    def _jx_stats(self, rest: str) -> None:
        """p50/p90/p99 of each phase of the newest N runs' timelines (1000), per backend."""
        if rest and not rest.isdigit():
            raise UsageError(f"%jx stats [N]: cannot read {rest!r}; e.g. %jx stats 200")
        print(stats_text(phase_stats(self.manager.records, int(rest) if rest else 1000)))

    def _jx_logs(self, rest: str) -> None:
        print(self.manager.log_text(self._run_id(rest, "logs")), end="")

    def _jx_cancel(self, rest: str) -> None:
        """Cancel a run of this kernel at once; a run of another kernel through a request in the store."""
        run_id = self._run_id(rest, "cancel")
        if self.manager.cancel(run_id):
            print(f"run {run_id} cancelled")
        else:
            print(cancel_elsewhere(self.manager.records, run_id))

    def _jx_wait(self, rest: str) -> Any:
        """Wait for a --bg run (at most SECONDS); its value, or its error raised."""
        run_text, _, seconds = rest.partition(" ")
        run = background_runs(self.manager).get(self._run_id(run_text, "wait"))
        try:
            timeout = float(seconds) if seconds.strip() else None
        except ValueError:
            raise UsageError(f"%jx wait N [SECONDS]: {seconds!r} is not a number of seconds") from None
        try:
            value = run.wait(timeout).value  # a failed run's error is raised, as the cell would have
        except TimeoutError as error:
            raise UsageError(str(error)) from None
        row = self.manager.records.get(run.run_id)
        if row is not None:
            print(run_line(row))
        return value

    def _jx_sessions(self, rest: str) -> Any:
        """The kernel's sandbox sessions: name, backend, age, idle, memory, cells run."""
        return sessions_table(self.manager.sessions())

    def _jx_end(self, rest: str) -> None:
        """End sandbox session NAME: its processes or container go, with its files."""
        if not rest:
            raise UsageError("%jx end needs a session name, e.g. %jx end data (see %jx sessions)")
        self.manager.end_session(rest)
        print(f"session {rest} ended")

    def _jx_fork(self, rest: str) -> None:
        """Make session B a fork of session A: a copy of its live state, A untouched."""
        names = rest.split()
        if len(names) != 2:
            raise UsageError("%jx fork needs two session names, e.g. %jx fork data trial (see %jx sessions)")
        self.manager.fork_session(*names)
        print(f"session {names[1]} forked from {names[0]}")

    def _jx_tree(self, rest: str) -> Any:
        """The experiment tree NAME (default: the latest): a widget that stays in the notebook as
        the static tree once the cell ends (``--live``: clickable while the kernel lives), or
        text without a widget frontend."""
        words = rest.split()
        live = "--live" in words
        name = " ".join(word for word in words if word != "--live")
        tables = trace_tables(self.manager)
        names = tables.names()
        if not names or (name and name not in names):
            raise UsageError(f"no trace {name!r}; traces here: {', '.join(names) or 'none yet (see explore)'}")
        trace = tables.open(name or names[0])
        if widgets_wanted(self.manager):
            from jupyter_exec.widgets import TreeWidget

            return TreeWidget.of(trace, self.manager, live=live)
        print(render(trace))
        return None

    def _jx_resources(self, rest: str) -> Any:
        """What each backend can offer now."""
        report = resources_report(self.manager)
        if widgets_wanted(self.manager):
            from jupyter_exec.widgets import ResourcesCards

            return ResourcesCards(report)
        print(format_report(report))
        return None

    def _jx_envs(self, rest: str) -> Any:
        """The runtime-env cache: what is built, how big, when last used."""
        return envs_table(self.manager.envs.index)

    def _jx_env(self, rest: str) -> None:
        """Set (options), clear (``clear``) or show (nothing) the kernel's default runtime env."""
        if rest == "clear":
            self.manager.default_env = None
        elif rest:
            self.manager.default_env = runtime_env(parse_line(jx_env, rest), Path(os.getcwd()))
        current = self.manager.default_env
        print(json.dumps(current.describe(), indent=2) if current else "no default runtime env")

    def _jx_cache(self, rest: str) -> Any:
        """The cache of identical runs: its entries (nothing), their count and size (``size``), or
        ``clear`` (all, or the entries whose key starts with KEY)."""
        command, _, key = rest.partition(" ")
        cache = self.manager.cache
        if command == "size":
            count, size = cache.size()
            print(
                f"{count} entries, {format_bytes(size)} (cap {format_bytes(cache.max_size)}: ExecConfig.cache_max_size)"
            )
            return None
        if command == "clear":
            print(f"{cache.clear(key.strip())} entries removed")
            return None
        if command:
            raise UsageError(f"%jx cache {command}: use %jx cache, %jx cache size or %jx cache clear [KEY]")
        return cache_table(cache)

    def _jx_doctor(self, rest: str) -> None:
        print(diagnose(self.manager.policy, self.manager.config)[0])

    def _jx_policy(self, rest: str) -> None:
        """The administrator's policy this kernel holds (read when the extension loaded): where it
        came from, its ceilings and allow-lists."""
        print(policy_report(self.manager.policy))
