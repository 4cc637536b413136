"""``--cache``: the cache of identical runs, through a real kernel on the seccomp backend
(the image part on Docker): a hit replays output and values fast and runs nothing, every
part of the key misses when changed, failures and pickles are never kept, and what is
kept can be listed, sized, capped and cleared."""

from __future__ import annotations

import json
import uuid

import pytest
from conftest import require

from jupyter_exec.cache import CacheEntries
from jupyter_exec.status import Status

pytestmark = pytest.mark.kernel
CACHED = "%%sandbox --backend seccomp --cache"


def _cell(tag: str, extra: str = "") -> str:
    """A cell that prints to both streams, displays, and brings back --out values."""
    return (
        f"{CACHED} --in x --out y,z {extra}\n"
        f"import sys\nprint('out {tag}', x)\nprint('err {tag}', file=sys.stderr)\n"
        "display({'shown': x})\ny, z = x * 2, [x, 'text', b'bytes']\n{'score': x}"
    )


@pytest.mark.ordinary_user
def test_a_second_identical_run_is_replayed_faster_than_it_runs(kernel):
    tag = uuid.uuid4().hex[:8]
    kernel.run("x = 21", check=True)
    first = kernel.run(_cell(tag), check=True)
    values = kernel.eval("(y, z)")
    kernel.run("y = z = None", check=True)
    second = kernel.run(_cell(tag), check=True)
    assert (second.stdout, second.stderr, second.displays, second.result) == (
        first.stdout,
        first.stderr,
        first.displays,
        first.result,
    )
    assert f"out {tag} 21" in first.stdout and first.displays and first.result
    assert kernel.eval("(y, z)") == values == (42, [21, "text", b"bytes"])
    origin, hit = kernel.records().runs(2)[::-1]
    assert origin["status"] == "succeeded" and hit["status"] == "cached"
    assert json.loads(kernel.records().get(hit["id"])["details"])["cached_from"] == origin["id"]
    assert f"out {tag} 21" in kernel.run(f"%jx logs {hit['id']}", check=True).stdout  # its log has the output
    body = _cell(tag).split(chr(10), 1)[1]

    def median_ms(options: str, times: int) -> float:
        """The median of ``times`` calls of the cell under ``options``, in the kernel."""
        call = (
            f"get_ipython().run_cell_magic('sandbox', '--backend seccomp {options} --quiet --in x --out y,z', {body!r})"
        )
        timed = kernel.run(
            f"import statistics, time\n{call}\ntimes = []\n"  # the first call keeps the cell as called so
            f"for _ in range({times}):\n    start = time.perf_counter()\n    {call}\n"
            "    times.append(time.perf_counter() - start)\n"
            "statistics.median(times) * 1000",
            check=True,
        )
        return float(timed.result_text)

    ran = median_ms("", 5)  # the same cell run: the baseline, under the same load
    replayed = median_ms("--cache", 25)
    assert replayed < ran / 3, (replayed, ran)  # about 2 ms against 20 or more on a quiet machine
    assert [r["status"] for r in kernel.records().runs(25)] == ["cached"] * 25


@pytest.mark.parametrize(
    ("component", "change"),
    [
        ("code", lambda k, tag: ("", _cell(tag + "-other"))),
        ("an input's content", lambda k, tag: ("x = 22", None)),
        ("a limit", lambda k, tag: ("", _cell(tag, "--mem 1g"))),
        ("an env var", lambda k, tag: ("", _cell(tag, "--env SEED=2"))),
        ("the runtime env", lambda k, tag: ("", _cell(tag, f"--working-dir {k.cwd / ('wd-' + tag)}"))),
        ("the trust flag", lambda k, tag: ("", _cell(tag, "--trust"))),
    ],
)
@pytest.mark.ordinary_user
def test_changing_one_part_of_the_key_misses(kernel, component, change):
    tag = uuid.uuid4().hex[:8]
    (kernel.cwd / f"wd-{tag}").mkdir()
    (kernel.cwd / f"wd-{tag}" / "data.txt").write_text("one")
    base = _cell(tag, "--env SEED=1")
    kernel.run("x = 21", check=True)
    kernel.run(base, check=True)
    assert kernel.run(base, check=True) and kernel.last_run()["status"] == "cached"
    before, cell = change(kernel, tag)
    if before:
        kernel.run(before, check=True)
    kernel.run(cell or base, check=True)
    assert kernel.last_run()["status"] == "succeeded", f"changing {component} should miss"


@pytest.mark.ordinary_user
def test_the_runtime_env_content_is_in_the_key(kernel):
    tag = uuid.uuid4().hex[:8]
    folder = kernel.cwd / f"wd-{tag}"
    folder.mkdir()
    (folder / "data.txt").write_text("one")
    cell = f"{CACHED} --working-dir {folder}\nopen('data.txt').read()"
    assert kernel.run(cell, check=True).result_text == "'one'"
    assert kernel.run(cell, check=True).result_text == "'one'" and kernel.last_run()["status"] == "cached"
    (folder / "data.txt").write_text("two")
    assert kernel.run(cell, check=True).result_text == "'two'" and kernel.last_run()["status"] == "succeeded"


@pytest.mark.ordinary_user
@pytest.mark.parametrize("mode", ["content", "mtime"])
def test_a_mounted_file_is_in_the_key(kernel, tmp_path, mode):
    folder = tmp_path / f"data-{mode}"
    folder.mkdir()
    (folder / "a.txt").write_text("first")
    cell = f"{CACHED} --cache-mounts {mode} --mount {folder}\nopen({str(folder / 'a.txt')!r}).read()"
    assert kernel.run(cell, check=True).result_text == "'first'"
    kernel.run(cell, check=True)
    assert kernel.last_run()["status"] == "cached"
    (folder / "a.txt").write_text("other")
    assert kernel.run(cell, check=True).result_text == "'other'"
    assert kernel.last_run()["status"] == "succeeded"


@pytest.mark.ordinary_user
def test_what_is_never_served_or_kept(kernel, tmp_path):
    tag = uuid.uuid4().hex[:8]
    failing = f"{CACHED}\nprint('{tag}')\nraise ValueError('{tag}')"
    for _ in range(2):
        assert kernel.run(failing).error["ename"] == "ValueError"
        assert kernel.last_run()["status"] == "failed"  # a failed run is never served
    unsafe = f"{CACHED} --out x\nclass Evil:\n    pass\nx = Evil()  # {tag}"
    for _ in range(2):
        assert kernel.run(unsafe).error["ename"] == "TransferError"
    trusted = kernel.run(f"{CACHED} --trust --out w\nimport fractions\nw = fractions.Fraction(1, 3)  # {tag}")
    assert trusted.error is None
    cache = CacheEntries(kernel.records().path, 1 << 30)
    entries = cache._execute("SELECT trusted, entry FROM run_cache").fetchall()
    assert all(r["trusted"] or '"pickle"' not in r["entry"] for r in entries)  # a pickle only under --trust
    assert any(r["trusted"] and '"pickle"' in r["entry"] for r in entries)
    assert tag not in json.dumps([r["entry"] for r in entries if not r["trusted"]])
    with pytest.raises(ValueError, match="never cached"):
        cache.put("k", run_id=1, backend="b", code="c", trusted=False, output=[], value={"$t": "pickle"}, outputs={})
    network = kernel.run(f"{CACHED} --network\n1")
    assert "not cached: a --network run" in network.stderr and "--cache-network" in network.stderr
    folder = tmp_path / "rw"
    folder.mkdir()
    writable = kernel.run(f"{CACHED} --mount {folder}:rw\n1")
    assert "not cached" in writable.stderr and ":rw" in writable.stderr
    kernel.run(f"{CACHED} --mount {folder}:rw\n1")
    assert kernel.last_run()["status"] == "succeeded"


@pytest.mark.ordinary_user
def test_jx_cache_lists_sizes_and_clears(kernel):
    tag = uuid.uuid4().hex[:8]
    kernel.run(f"{CACHED}\n'{tag}'", check=True)
    listing = kernel.run("%jx cache", check=True)
    assert "seccomp" in listing.result_text
    size = kernel.run("%jx cache size", check=True).stdout
    assert "entries" in size and "cap" in size
    assert kernel.run("%jx cache clear", check=True).stdout.split()[1] == "entries"
    assert kernel.run("%jx cache size", check=True).stdout.startswith("0 entries")
    kernel.run(f"{CACHED}\n'{tag}'", check=True)
    assert kernel.last_run()["status"] == "succeeded"  # cleared: it ran again


@pytest.mark.ordinary_user
def test_the_size_cap_evicts_the_least_recently_used(tmp_path):
    entry = {"output": [["stdout", "x" * 60]], "value": 1, "outputs": {}}
    cache = CacheEntries(tmp_path / "runs.sqlite3", 3 * len(json.dumps(entry)))  # room for three
    for key in ("a", "b", "c"):
        cache.put(key, run_id=1, backend="x", code="c", trusted=False, **entry)
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("d", run_id=1, backend="x", code="c", trusted=False, **entry)
    assert [e["key"] for e in cache.entries()] == ["d", "a", "c"]  # b went: the least recently used
    assert cache.size() == (3, 3 * len(json.dumps(entry)))


@pytest.mark.ordinary_user
def test_a_map_item_run_before_is_not_run_again(kernel):
    tag = uuid.uuid4().hex[:8]
    work = f"str(item) + {tag!r}"
    kernel.run(
        f"import jupyter_exec\nfirst = jupyter_exec.map({work!r}, range(10), backend='seccomp', cache=True)", check=True
    )
    cell = kernel.run(
        f"second = jupyter_exec.map({work!r}, range(12), backend='seccomp', cache=True)\n"
        f"first == second[:10] and second[10] == '10{tag}'",
        check=True,
    )
    assert cell.result_text == "True"
    assert "10 of 12 items from the cache" in cell.stderr
    maps = [r for r in kernel.records().runs(20, columns=("id", "name", "status", "details")) if r["name"] == "map"]
    assert json.loads(maps[0]["details"]) == {"items": 12, "cached": 10, "succeeded": 12, "failed": 0}
    again = kernel.run(f"jupyter_exec.map({work!r}, range(12), backend='seccomp', cache=True)")
    assert again.error is None and kernel.last_run()["status"] == Status.CACHED  # nothing ran at all


def test_a_changed_image_misses(kernel, tmp_path):
    from jupyter_exec.backends.container import ContainerBackend

    availability = ContainerBackend.availability()
    require(availability.ok, f"Docker backend: {availability.reason} — {availability.fix}")
    import docker

    client = docker.from_env(version="auto")
    base = client.images.get("jupyter-exec/base:latest")
    name = f"jupyter-exec/cache-test:{uuid.uuid4().hex[:8]}"
    base.tag(name)
    try:
        cell = f"%%sandbox --image {name} --cache\n6 * 7"
        assert kernel.run(cell, check=True).result_text == "42"
        kernel.run(cell, check=True)
        assert kernel.last_run()["status"] == "cached"
        (tmp_path / "Dockerfile").write_text(f"FROM {base.id}\nLABEL jupyter-exec.test={uuid.uuid4().hex}\n")
        client.images.build(path=str(tmp_path), tag=name, rm=True, forcerm=True)  # the same name, another image
        kernel.run(cell, check=True)
        assert kernel.last_run()["status"] == "succeeded"
    finally:
        client.images.remove(name, force=True)
