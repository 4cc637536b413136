"""The in-target side of the CodeRunner: stdlib only, runs the cell.

Started by a backend as ``python -I bootstrap.py CHANNEL [REQUEST]``. CHANNEL is the
protocol channel: a file descriptor number, or a path (a FIFO, e.g. in a container) to
open for writing. REQUEST is a path to read the request from (default: stdin). It says
``ready`` on the channel, reads one request (JSON) until EOF, confines itself if the
request says so, runs the cell and writes the envelope.

Channels: the cell's stdout/stderr are the process's fd 1 and 2, untouched, so they
stream live and whatever the cell prints is only ever output. Protocol messages go to a
separate descriptor as JSON lines; it is close-on-exec so children never inherit it.
Values cross as data both ways, in the tagged JSON of ``codec.py`` (shipped beside this
file): ``--in`` values are rebuilt with this Python's numpy and pandas, whatever the
kernel's; results are written so the kernel's rebuild them, pickled only when the request
says the user trusts the cell.
"""

import ast
import base64
import builtins
import functools
import importlib
import io
import json
import linecache
import os
import resource
import sys
import traceback
import types

# Annotations here are strings and ``typing`` is read by type checkers only: this file runs
# on the target's Python, which may be older, and importing ``typing`` would cost every run
# a few milliseconds.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

    Emit = Callable[[dict[str, Any]], None]

CELL = "<cell>"
SAFE_MIME = ("text/plain", "text/html", "image/png", "image/jpeg")
_channel: "Optional[int]" = None


def send(message: "dict[str, Any]") -> None:
    assert _channel is not None, "main() opens the channel before anything is sent"
    data = (codec.dumps(message) + "\n").encode()
    view = memoryview(data)
    while view:
        view = view[os.write(_channel, view) :]


def _beside(name: str) -> "types.ModuleType":
    """The module ``NAME.py`` shipped beside this file, loaded by its path (a target's folder
    may not be listable, so no ``sys.path`` search)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        name, os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    )
    assert spec is not None and spec.loader is not None, f"{name}.py is shipped beside the bootstrap"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __package__:  # the kernel's copy (the Ray task uses it too)
    from . import codec
else:  # a target's copy, codec.py beside it
    codec = _beside("codec")


class TransferError(Exception):
    """An ``--in`` value (or a map's work) cannot be rebuilt in this sandbox: one line, with the fix."""


def mime_bundle(obj: object) -> "dict[str, str]":
    """A display bundle of the safe MIME types, from the object's ``_repr_*_`` methods."""
    data: "dict[str, Any]" = {}
    if hasattr(obj, "_repr_mimebundle_"):
        try:
            result = obj._repr_mimebundle_()
            data.update((result[0] if isinstance(result, tuple) else result) or {})
        except Exception:
            pass
    for mime, method in (("text/html", "_repr_html_"), ("image/png", "_repr_png_"), ("image/jpeg", "_repr_jpeg_")):
        if mime not in data and hasattr(obj, method):
            try:
                rendered = getattr(obj, method)()
            except Exception:
                continue
            if rendered is not None:
                data[mime] = rendered
    bundle = {"text/plain": repr(obj)}
    for mime, rendered in data.items():
        if mime not in SAFE_MIME or mime == "text/plain":
            continue
        if isinstance(rendered, bytes):
            rendered = base64.b64encode(rendered).decode()
        if isinstance(rendered, str):
            bundle[mime] = rendered
    return bundle


def displayer(emit: "Emit") -> "Callable[..., None]":
    """The cell's ``display``, like IPython's: each object's bundle goes to ``emit``."""

    def display(*objs: object, **_ignored: object) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        for obj in objs:
            emit({"t": "display", "data": mime_bundle(obj)})

    return display


def _show_open_figures(emit: "Emit") -> None:
    """Display matplotlib figures the cell left open, as the inline backend would."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return
    for number in pyplot.get_fignums():
        buffer = io.BytesIO()
        pyplot.figure(number).savefig(buffer, format="png", bbox_inches="tight")
        emit(
            {
                "t": "display",
                "data": {"text/plain": f"<Figure {number}>", "image/png": base64.b64encode(buffer.getvalue()).decode()},
            }
        )
    pyplot.close("all")


def describe_error(error: BaseException) -> "dict[str, Any]":
    """Type, message and the traceback of the cell's own frames."""
    tb_exc = traceback.TracebackException.from_exception(error)
    frames = list(tb_exc.stack)
    for i, frame in enumerate(frames):
        if frame.filename == CELL:
            tb_exc.stack = traceback.StackSummary.from_list(frames[i:])
            break
    else:
        tb_exc.stack = traceback.StackSummary.from_list([])
    text = "".join(tb_exc.format())
    return {
        "type": type(error).__name__,
        "module": type(error).__module__,
        "base": next(cls.__name__ for cls in type(error).__mro__ if cls.__module__ == "builtins"),
        "message": str(error),
        "traceback": text,
        "causes": _causes(error),
    }


def _causes(error: BaseException) -> "list[dict[str, Any]]":
    """``error`` and the exceptions behind it (its cause or context, a URLError's reason), as the
    kernel's hints read them: type, errno, file name."""
    found: "list[dict[str, Any]]" = []
    seen: "set[int]" = set()
    current: "BaseException | None" = error
    while current is not None and id(current) not in seen and len(found) < 8:
        seen.add(id(current))
        errno, strerror = getattr(current, "errno", None), getattr(current, "strerror", None)
        filename = getattr(current, "filename", None)
        found.append(
            {
                "type": type(current).__name__,
                "errno": errno if isinstance(errno, int) else None,
                "strerror": strerror if isinstance(strerror, str) else None,
                "filename": filename if isinstance(filename, str) else None,
            }
        )
        reason = getattr(current, "reason", None)
        current = reason if isinstance(reason, BaseException) else (current.__cause__ or current.__context__)
    return found


def run_cell(code: str, namespace: "dict[str, Any]") -> "Any":
    """Execute ``code``; return the value of its last expression, as IPython would."""
    body, last = _compiled(code)
    exec(body, namespace)
    return eval(last, namespace) if last is not None else None


@functools.lru_cache(maxsize=32)
def _compiled(code: str) -> "tuple[types.CodeType, Optional[types.CodeType]]":
    """The cell's statements and its last expression (or None), compiled once per text: a
    process that runs the same code again (a Ray worker, a fan-out batch) skips the compiler."""
    tree = ast.parse(code, CELL, "exec")
    last = None
    final = tree.body[-1] if tree.body else None
    if isinstance(final, ast.Expr):
        tree.body.pop()
        last = compile(ast.Expression(final.value), CELL, "eval")
    return compile(tree, CELL, "exec"), last


MAP_INPUT = "__jx_map__"  # the input that makes a request a batch of map items


def load_inputs(request: "dict[str, Any]") -> "dict[str, Any]":
    """The ``--in`` values (the kernel's tagged JSON), rebuilt with this sandbox's libraries; a
    ``TransferError`` naming the value, the package, both versions and the fix when one cannot be."""
    loaded = {}
    for name, encoded in (request.get("inputs") or {}).items():
        what = "the map's work" if name == MAP_INPUT else f"--in {name}"
        try:
            loaded[name] = codec.decode(encoded, _unpickle)
        except codec.Mismatch as mismatch:
            told = mismatch.describe("in the kernel", "in this sandbox")
            raise TransferError(f"{what}: {told}; {_fix(mismatch)}") from None
    return loaded


def _fix(mismatch: "Any") -> str:
    package, theirs = mismatch.package, mismatch.theirs
    if mismatch.ours is None:
        return f"add {package} to the sandbox (--pip {package}, or --image an image that has it)"
    return (
        f"run it where {package} is the kernel's{' ' + theirs if theirs else ''}: --image IMAGE with it "
        "(an online `jupyter-exec images build base` installs the newest), or --backend seccomp (the kernel's Python)"
    )


def _unpickle(encoded: "dict[str, Any]") -> "Any":
    """An input the kernel pickled (it trusts itself): with the kernel's own cloudpickle when it
    was shipped beside this file (``lib/``), so a notebook's function loads whatever the image has."""
    lib = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib")
    if os.path.isdir(lib) and lib not in sys.path:
        sys.path.insert(0, lib)
    return codec.load_pickle(encoded)


def apply_batch(work: "Any", items: "list[Any]", start: int, trust: bool, arrow: bool = False) -> "dict[str, Any]":
    """``work`` (a function, or cell code whose last expression is the result and which sees
    ``item``) over ``items``, each result encoded as data: ``{"results": [...], "errors":
    {index: described}}``; an item that raises (or returns what cannot travel as data) has
    None among the results and its error, and the items after it still run."""
    results: "list[Any]" = []
    errors: "dict[str, dict[str, str]]" = {}
    is_code = isinstance(work, str)
    if is_code:
        linecache.cache[CELL] = (len(work), None, work.splitlines(True), CELL)
    for offset, item in enumerate(items):
        try:
            value = run_cell(work, {"item": item, "__name__": "__main__"}) if is_code else work(item)
            results.append(encode(value, trust, f"result[{start + offset}]", arrow))
        except codec.Untransferable as why:
            results.append(None)
            errors[str(start + offset)] = {"type": "TransferError", "message": str(why), "traceback": ""}
        except Exception as error:
            results.append(None)
            described = describe_error(error)
            if not is_code:  # a function: its own frames, not this loop's
                frames = traceback.extract_tb(error.__traceback__)[1:]
                described["traceback"] = (
                    "Traceback (most recent call last):\n"
                    + "".join(traceback.format_list(frames))
                    + "".join(traceback.format_exception_only(error))
                )
            errors[str(start + offset)] = described
    return {"results": results, "errors": errors}


def encode(value: "Any", trust: bool, path: str = "value", arrow: bool = False) -> "Any":
    """A result as data (``codec.encode``), pickled only when the user trusts the cell."""
    import pickle

    return codec.encode(value, pickle.dumps if trust else None, path, arrow)


def usage() -> "dict[str, float]":
    self_usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "cpu_seconds": self_usage.ru_utime + self_usage.ru_stime + children.ru_utime + children.ru_stime,
        "max_rss": max(self_usage.ru_maxrss, children.ru_maxrss) * 1024,
    }


def _import_confine() -> "Optional[types.ModuleType]":
    """The confinement module, when it was shipped beside this file (local backends)."""
    return _sibling("confine")


def _sibling(name: str) -> "Optional[types.ModuleType]":
    """A module shipped beside this file (``confine``, ``netrelay``), kept out of ``sys.modules``
    so a cell's own module of that name is not shadowed; None where it was not shipped."""
    here = os.path.dirname(os.path.abspath(__file__))
    if not os.path.exists(os.path.join(here, name + ".py")):
        return None
    sys.path.insert(0, here)
    try:
        module: "types.ModuleType" = importlib.import_module(name)
    finally:
        sys.path.remove(here)
    sys.modules.pop(name, None)
    return module


def _hold_lifeline() -> bool:
    """pid 1 of a container: live only while the kernel holds the lifeline FIFO (``$JX_LIFELINE``,
    of which it has the only writing end). A thread reads it twice a second until that end is
    closed (the kernel let go of the container, or died), then ends this process, and with it
    everything in the container. The kernel's end is open before the container starts, so an
    EOF always means it is gone. False when there is no lifeline (not in a container)."""
    path = os.environ.pop("JX_LIFELINE", None)
    if not path:
        return False
    import _thread

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)

    def watch() -> None:
        import time

        while True:
            try:
                if not os.read(fd, 512):
                    _release_request()
                    os._exit(0)
            except BlockingIOError:
                pass  # the kernel holds it
            # Read, never poll: a FIFO reports no hang-up to a reader that never saw a writer
            # (the kernel died before this opened it), and gVisor cannot poll a host FIFO.
            time.sleep(0.5)

    _thread.start_new_thread(watch, ())
    return True


def _release_request() -> None:
    """Give an idle container's other process, blocked opening the request FIFO, its writer: gVisor
    cannot end a task blocked opening a host FIFO, and the container would not stop."""
    try:
        os.close(os.open(sys.argv[2], os.O_WRONLY | os.O_NONBLOCK))
    except (OSError, IndexError):
        pass  # nobody is waiting for a request


def _linger() -> None:
    """pid 1 of a container once its cell is over and reported: let go of the protocol channel
    and stay until the kernel lets go of the lifeline, so the kernel can still ask the engine
    how the cell ended (an engine reports an OOM kill only while the container is there)."""
    if _channel is not None:
        os.close(_channel)
    import time

    while True:
        time.sleep(3600)


SUPERVISE_VAR = "JX_SUPERVISE"
_PR_SET_CHILD_SUBREAPER = 36


def _supervise() -> None:
    """Split into a supervisor and the process that runs the cell, when this process is
    pid 1 of a new pid namespace (which ignores signals it has no handler for, so a
    CPU-time SIGXCPU would not end the cell) or the host asks for it (``JX_SUPERVISE=1``:
    no pid namespace, so nothing else would end what the cell leaves running).

    The supervisor is a child subreaper: whatever the cell starts, double-forked and
    ``setsid`` or not, is re-parented to it rather than to init. When the cell's process
    ends it kills every descendant, reaps them, and reports the cell's wait status."""
    asked = os.environ.pop(SUPERVISE_VAR, None) == "1"
    if os.getpid() != 1 and not asked:
        return
    import ctypes

    ctypes.CDLL(None).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    child = os.fork()
    if child == 0:
        return
    import signal

    signal.signal(signal.SIGINT, lambda signum, frame: os.kill(child, signal.SIGINT))  # a session's interrupt
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    lifeline = _hold_lifeline()
    status = 0
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(1)
        if pid == child:
            break
    kill_descendants()
    send({"t": "exit", "status": status})
    if lifeline:
        _linger()
    os._exit(0)


def kill_descendants() -> None:
    """SIGKILL every descendant of this process and reap them, until none is left: a child
    killed mid-fork leaves its own child re-parented here, found on the next pass."""
    import signal

    while True:
        # As pid 1, everything else in the pid namespace (gVisor has no task/children to read).
        for pid in [-1] if os.getpid() == 1 else descendants(os.getpid()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.wait()
        except ChildProcessError:
            return


def descendants(root: int) -> "list[int]":
    """The processes below ``root``, from ``/proc/PID/task/TID/children``."""
    found: "list[int]" = []
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/children") as children:
                    kids = [int(c) for c in children.read().split()]
            except OSError:
                continue
            found += kids
            frontier += kids
    return found


def main() -> None:
    target = sys.argv[1]
    channel = int(target) if target.isdigit() else os.open(target, os.O_WRONLY | os.O_CLOEXEC)
    serve(channel, _import_confine(), sys.argv[2] if len(sys.argv) > 2 else None)


def serve(
    channel: int,
    confine: "Optional[types.ModuleType]",
    request_path: "Optional[str]" = None,
    control: "Optional[int]" = None,
) -> None:
    """Be the run's process: say ready on ``channel``, read the request (from
    ``request_path``, else stdin), confine with ``confine`` if asked, run the cell, send
    the envelope and exit. A fork server's child calls this with the module it imported.
    A session's process serves many cells (``serve_session``): with ``control`` (a process
    session's socket), or with ``JX_SESSION=1`` (a container's, from ``request_path``)."""
    global _channel
    _channel = channel
    os.set_inheritable(_channel, False)
    _supervise()
    main_pid = os.getpid()
    send({"t": "ready"})
    if control is not None:
        serve_session(_socket_session(control), confine, main_pid)
    if request_path is not None and os.environ.pop(SESSION_VAR, None) == "1":
        serve_session(_fifo_session(request_path), confine, main_pid)
    if request_path is not None:
        with open(request_path, "rb") as source:
            request = json.loads(source.read())
    else:
        request = json.loads(sys.stdin.buffer.read())
    _prepare(request, confine)
    _report(run_request(request, send, _main_module_namespace()), main_pid)
    os._exit(0)  # the cell is over: skip interpreter teardown, the host tears the rest down


def _prepare(request: "dict[str, Any]", confine: "Optional[types.ModuleType]") -> None:
    """The process set-up a request asks for: confinement, env, cwd, the env's files and modules."""
    if request.get("confine"):
        try:
            if confine is None:
                raise OSError("confine.py is not beside the bootstrap in this target")
            relay = request["confine"].get("relay")  # --network HOST,...: the way to the proxy
            netrelay = _sibling("netrelay") if relay else None  # imported before the files are confined
            notes = confine.confine(request["confine"])
            if relay:
                if netrelay is None:
                    raise OSError("netrelay.py is not beside the bootstrap in this target")
                notes.append(netrelay.start(relay["socket"], relay["port"]))
        except OSError as error:
            send({"t": "result", "confine_error": str(error)})
            os._exit(0)
        send({"t": "confined", "notes": notes})
    os.environ.update(request.get("env", {}))
    if request.get("cwd"):
        os.chdir(request["cwd"])
    if request.get("working_dir"):  # the env's files, a fresh copy per run
        import shutil

        # entry by entry: the run's directory itself is not the cell's to re-stamp (in a container
        # it belongs to another user, and copying the folder's own mode and times there is refused)
        for entry in os.scandir(request["working_dir"]):
            if entry.is_dir():
                shutil.copytree(entry.path, entry.name, dirs_exist_ok=True)
            else:
                shutil.copy2(entry.path, entry.name)
    sys.path[:0] = request.get("sys_path") or []  # the env's py_modules
    sys.stdin = open(os.devnull)


def _report(envelope: "dict[str, Any]", main_pid: int) -> None:
    """Send the cell's envelope, from the cell's own process only."""
    if os.getpid() != main_pid:
        os._exit(0)  # a child the cell forked: only the cell's own process reports
    envelope["usage"] = usage()
    send(envelope)


SESSION_HEADER = 8  # a session's frame: this many bytes of length (big-endian), then the request
SESSION_VAR = "JX_SESSION"  # set to 1: the container's bootstrap serves a session


def serve_session(
    receive: "Callable[[], Optional[tuple[dict[str, Any], Optional[list[int]]]]]",
    confine: "Optional[types.ModuleType]",
    main_pid: int,
) -> None:
    """Be a sandbox session's process: run cell after cell in one namespace, each request from
    ``receive`` (None: the kernel let go of the session). A request may come with the cell's
    own stdout, stderr and protocol channel (a process session's socket hands them over), put
    in place for that cell alone and let go once its envelope is sent, so the host sees its
    pipes close; else the cell uses the process's own (a container's FIFOs). The first request
    confines the process for the whole session. An interrupt (SIGINT from the host) stops the
    cell as ``KeyboardInterrupt``; one between cells is ignored. A ``fork`` request (a process
    session's, between cells) makes a fork of the session (``_fork``), which goes on here with
    the socket it came with. Never returns."""
    global _channel
    namespace, first = _main_module_namespace(), True
    null = os.open(os.devnull, os.O_RDWR)
    while True:
        try:
            frame = receive()
        except KeyboardInterrupt:
            continue  # an interrupt that missed its cell
        if frame is None:
            os._exit(0)
        request, fds = frame
        if "fork" in request and fds and isinstance(receive, _Link):
            if _fork(request["fork"], fds[0], confine):
                receive.swap(fds[0])
                main_pid = os.getpid()
            continue
        if fds:
            os.dup2(fds[0], 1)
            os.dup2(fds[1], 2)
            os.close(fds[0])
            os.close(fds[1])
            _channel = fds[2]
        try:
            if first:
                _prepare(request, confine)
                first = False
            _report(run_request(request, send, namespace), main_pid)
        except KeyboardInterrupt:
            pass  # after the cell's own end: its envelope is sent, or the host's clock ends the cell
        finally:
            if fds:
                os.dup2(null, 1)
                os.dup2(null, 2)
                os.close(fds[2])
                _channel = None


def _socket_session(control: int) -> "Callable[[], Optional[tuple[dict[str, Any], Optional[list[int]]]]]":
    """A process session's requests, from its socket (``control``): the session's own channel is
    left to its supervisor (its exit), and the socket moved where a cell's processes never get it."""
    global _channel

    assert _channel is not None
    os.close(_channel)
    _channel = None
    link = _Link(_high_copy(control))
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, control)
    os.close(null)
    return link


class _Link:
    """A process session's socket, read one frame at a time; a fork swaps in its own."""

    def __init__(self, fd: int) -> None:
        import socket

        self.socket = socket.socket(fileno=fd)

    def __call__(self) -> "Optional[tuple[dict[str, Any], Optional[list[int]]]]":
        return _receive(self.socket)

    def swap(self, fd: int) -> None:
        import socket

        self.socket.close()
        self.socket = socket.socket(fileno=_high_copy(fd))
        os.close(fd)


def _fork(spec: "dict[str, Any]", control: int, confine: "Optional[types.ModuleType]") -> bool:
    """Fork this session's process: True in the fork, with its own process session, a further
    Landlock layer (only its own scratch directory writable, no signal to anything outside it:
    not to its parent) and that directory as its home; False here, where the fork is reaped when
    it ends (``_reap_forks``; were this process to end first, the session's supervisor would).
    Threads do not survive a fork: only the one running the session is there."""
    import signal

    child = os.fork()
    if child == 0:
        _forks.clear()
        try:
            os.setsid()
            if spec.get("landlock"):
                if confine is None:
                    raise OSError("confine.py is not beside the bootstrap in this target")
                confine.apply_landlock(**spec["landlock"])
            os.chdir(spec["cwd"])
            os.environ.update(spec.get("env", {}))
        except OSError:
            os._exit(1)  # the kernel sees the fork's socket close
        return True
    os.close(control)
    _forks.add(child)
    signal.signal(signal.SIGCHLD, _reap_forks)
    return False


_forks: "set[int]" = set()  # this session's forks not yet reaped


def _reap_forks(signum: int, frame: object) -> None:
    """Reap the forks that ended (only those: the cell's own children are the cell's to wait for)."""
    for pid in list(_forks):
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                _forks.discard(pid)
        except ChildProcessError:
            _forks.discard(pid)


def _fifo_session(path: str) -> "Callable[[], Optional[tuple[dict[str, Any], Optional[list[int]]]]]":
    """A container session's requests: each one the next writer of the request FIFO ``path`` sends."""

    def receive() -> "Optional[tuple[dict[str, Any], Optional[list[int]]]]":
        while True:
            with open(path, "rb") as source:
                data = source.read()
            if data:  # an open without a request (gVisor's wake-up): wait for the next
                return json.loads(data), None

    return receive


def _high_copy(fd: int) -> int:
    """A close-on-exec copy of ``fd`` above the standard ones (processes a cell starts never hold it)."""
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)


def _receive(link: "Any") -> "Optional[tuple[dict[str, Any], Optional[list[int]]]]":
    """The next frame from the session's socket: the request and its three descriptors; None at EOF."""
    import socket

    header, fds, _, _ = socket.recv_fds(link, SESSION_HEADER, 3)
    if not header:
        return None
    while len(header) < SESSION_HEADER:
        header += link.recv(SESSION_HEADER - len(header))
    size, body = int.from_bytes(header, "big"), bytearray()
    while len(body) < size:
        chunk = link.recv(min(size - len(body), 1 << 20))
        if not chunk:
            return None
        body += chunk
    for fd in fds:
        os.set_inheritable(fd, False)
    return json.loads(body), fds


def _main_module_namespace() -> "dict[str, Any]":
    """A fresh ``__main__`` module for the cell, as IPython gives one: what the cell defines
    is then ``__main__.NAME``, so pickle finds it (``multiprocessing.Pool.map`` of a cell's
    function). Only for a process of its own, never a host like a Ray worker."""
    module = types.ModuleType("__main__")
    sys.modules["__main__"] = module
    return module.__dict__


def run_request(
    request: "dict[str, Any]", emit: "Emit", namespace: "Optional[dict[str, Any]]" = None
) -> "dict[str, Any]":
    """Run the request's cell in this process and return its envelope (``result`` message).

    The process set-up (channel, confinement, env, cwd) is the caller's, so a host that
    already is the target process (a Ray worker) runs cells with the same code.
    ``emit`` takes the display messages; ``namespace`` is the cell's globals (default: a
    new dict).
    """
    code = request["code"]
    linecache.cache[CELL] = (len(code), None, code.splitlines(True), CELL)
    namespace = {} if namespace is None else namespace
    namespace.update({"__name__": "__main__", "__builtins__": builtins, "display": displayer(emit)})
    trust, arrow = bool(request.get("trust")), bool(request.get("arrow"))
    envelope: "dict[str, Any]" = {"t": "result", "value": None, "outputs": {}, "error": None}
    try:
        namespace.update(load_inputs(request))
        batch = namespace.pop(MAP_INPUT, None)
        if batch is not None:  # a batch of map items: each item's result or error, as data
            envelope["value"] = {"data": apply_batch(batch["work"], batch["items"], batch["start"], trust, arrow)}
            return envelope
        value = run_cell(code, namespace)
        _show_open_figures(emit)
        if value is not None:
            try:
                envelope["value"] = {"data": encode(value, trust, arrow=arrow)}
            except codec.Untransferable:
                envelope["value"] = {"display": mime_bundle(value)}
        for name in request.get("outputs", []):
            if name not in namespace:
                raise NameError(f"--out {name}: the cell did not define {name!r}")
            try:
                envelope["outputs"][name] = encode(namespace[name], trust, name, arrow)
            except codec.Untransferable as why:
                envelope["untransferable"] = str(why)
                break
    except BaseException as error:  # the cell's exceptions, SystemExit included
        envelope["error"] = describe_error(error)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return envelope


if __name__ == "__main__":
    main()
