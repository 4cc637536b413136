"""Boot the test VM, show its console, and wait until it powers itself off.

Usage: boot.py IMAGE_DIR SHARE_DIR CONSOLE_LOG TIMEOUT_SECONDS

KVM where ``/dev/kvm`` opens and really runs a guest (a probe boots the VM's kernel with no
root file system: under working KVM it panics within seconds; where KVM is a page-table
virtualiser, as on these machines, it prints nothing and is stopped after a few seconds),
else QEMU's emulation with one host thread per virtual CPU. The disk is opened with
``snapshot=on``: the cached image never changes. Exit status: QEMU's (0 when the VM powered
itself off), or 1 when it had to be stopped (the console's tail is printed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

PROBE_FIRST_LINE = 5.0  # seconds for a working KVM to print the kernel's first line (TCG: under 1 s)
PROBE_PANIC = 20.0


def qemu(image: Path, accel: str, *extra: str) -> list[str]:
    cpu = "host" if accel == "kvm" else "max"
    accel_option = "kvm" if accel == "kvm" else "tcg,thread=multi"
    return [
        "qemu-system-x86_64", "-accel", accel_option, "-cpu", cpu, "-smp", "2", "-m", "2048",
        "-nodefaults", "-display", "none", "-no-reboot", "-serial", "stdio", "-monitor", "none",
        "-kernel", str(image / "vmlinuz"), *extra,
    ]  # fmt: skip


def watch(command: list[str], log: Path, timeout: float, first_line: float | None = None, *, echo: bool) -> int | None:
    """Run ``command`` with its console in ``log`` (and on stderr if ``echo``) until it exits
    (its exit status) or ``timeout`` passes, or no kernel line came within ``first_line`` s (None)."""
    started, seen = time.monotonic(), b""
    with log.open("wb") as out, log.open("rb") as console:
        vm = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            while True:
                status = vm.poll()
                new = console.read()
                seen += new
                if echo and new:
                    sys.stderr.buffer.write(new)
                    sys.stderr.flush()
                if status is not None:
                    return status
                elapsed = time.monotonic() - started
                if elapsed > timeout or (first_line and elapsed > first_line and b"Linux version" not in seen):
                    return None
                time.sleep(0.2)
        finally:
            if vm.poll() is None:
                vm.kill()
                vm.wait()


def accelerator(image: Path, log: Path) -> tuple[str, str]:
    """``kvm`` if a guest kernel really runs under it here, else ``tcg``; and why."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg", "emulated: no usable /dev/kvm"
    probe = qemu(image, "kvm", "-append", "console=ttyS0 panic=-1 root=/dev/nonexistent")
    ended = watch(probe, log, PROBE_PANIC, PROBE_FIRST_LINE, echo=False)
    if ended is not None and b"Kernel panic" in log.read_bytes():
        return "kvm", "KVM"
    return "tcg", "emulated: /dev/kvm does not run a guest here"


def main() -> int:
    image, share, console, timeout = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
    accel, why = accelerator(image, console)
    print(f"\n==> boot the VM ({why})", file=sys.stderr)
    command = qemu(
        image, accel,
        "-initrd", str(image / "initrd.img"),
        "-append", "root=/dev/vda rw console=ttyS0 quiet systemd.unified_cgroup_hierarchy=1 "
                   "systemd.show_status=error panic=-1",
        "-drive", f"file={image / 'root.img'},format=raw,if=virtio,snapshot=on",
        "-virtfs", f"local,path={share},mount_tag=host0,security_model=none",
    )  # fmt: skip
    status = watch(command, console, timeout, echo=True)
    if status is not None:
        return status
    tail = console.read_text(errors="replace").splitlines()[-40:]
    print(f"the VM did not power off within {timeout:g} s; its console's last lines:", *tail, sep="\n", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
