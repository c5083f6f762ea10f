# Escape drills, run as root inside a namespace sandbox (Debian image) by
# crates/daemon/tests/drills.rs. Each drill prints one line:
#   <name> contained <why>   or   <name> ESCAPED <what worked>
# Raw syscalls go through ctypes so that the kernel, not a missing tool,
# is what says no. argv[1]: a host pid to aim at; argv[2]: a host path
# (another sandbox's disk image) that must not be reachable.
import ctypes, errno, os, stat, subprocess, sys

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
HOST_PID = int(sys.argv[1])
OTHER_PATH = sys.argv[2]


def report(name, escaped, detail):
    print(f"{name} {'ESCAPED' if escaped else 'contained'} {detail}", flush=True)


def sys_call(nr, *args):
    r = libc.syscall(nr, *args)
    return r, ctypes.get_errno()


def denied(name, nr, *args):
    r, e = sys_call(nr, *args)
    report(name, r >= 0, f"syscall {nr} -> {r} ({errno.errorcode.get(e, e)})")


def write_fails(name, path, data):
    try:
        with open(path, "w") as f:
            f.write(data)
        report(name, True, f"wrote {path}")
    except OSError as e:
        report(name, False, f"{path}: {e.strerror}")


def mount(source, target, fstype, flags, data):
    r = libc.mount(source, target, fstype, ctypes.c_ulong(flags), data)
    return r, ctypes.get_errno()


MS_RDONLY, MS_REMOUNT, MS_BIND = 1, 32, 4096

write_fails("core_pattern", "/proc/sys/kernel/core_pattern", "|/tmp/pwn")
write_fails("sysrq_trigger", "/proc/sysrq-trigger", "h")
write_fails("modprobe_path", "/proc/sys/kernel/modprobe", "/tmp/pwn")

os.makedirs("/tmp/cg", exist_ok=True)
r, e = mount(b"cgroup", b"/tmp/cg", b"cgroup", 0, b"memory")
escaped = r == 0
if escaped:
    escaped = os.access("/tmp/cg/release_agent", os.W_OK)
report("cgroup_v1_release_agent", escaped, f"mount cgroup -> {errno.errorcode.get(e, e)}")

# mknod: the node must not be creatable, and if it were, nodev mounts and
# the device cgroup must still keep it closed.
try:
    os.mknod("/tmp/sda", 0o600 | stat.S_IFBLK, os.makedev(8, 0))
    try:
        os.close(os.open("/tmp/sda", os.O_RDONLY))
        report("mknod_block_device", True, "created and opened 8:0")
    except OSError as e:
        report("mknod_block_device", False, f"created but open failed: {e.strerror}")
except OSError as e:
    report("mknod_block_device", False, f"mknod: {e.strerror}")
with open("/proc/self/mountinfo") as f:
    devs = []
    for line in f:
        fields = line.split()
        point, opts = fields[4], fields[5].split(",")
        if "nodev" not in opts and not (point == "/dev" or point.startswith("/dev/")):
            devs.append(point)
report("nodev_everywhere", bool(devs), f"mounts without nodev outside /dev: {devs}")

# Modules, kexec, bpf, perf, keyrings, userfaultfd, open_by_handle_at.
SYS = dict(init_module=175, finit_module=313, delete_module=176, kexec_load=246,
           kexec_file_load=320, bpf=321, perf_event_open=298, keyctl=250, add_key=248,
           request_key=249, userfaultfd=323, open_by_handle_at=304, reboot=169,
           swapon=167, swapoff=168, acct=163, unshare=272, setns=308, fsopen=430,
           open_tree=428, move_mount=429, mount_setattr=442, pivot_root=155,
           io_uring_setup=425, iopl=172, ioperm=173, syslog=103)
denied("finit_module", SYS["finit_module"], -1, b"", 0)
denied("init_module", SYS["init_module"], None, 0, b"")
denied("delete_module", SYS["delete_module"], b"ext4", 0)
denied("kexec_load", SYS["kexec_load"], 0, 0, None, 0)
denied("bpf", SYS["bpf"], 0, None, 0)
denied("perf_event_open", SYS["perf_event_open"], None, 0, -1, -1, 0)
denied("keyctl", SYS["keyctl"], 1, 0)  # KEYCTL_JOIN_SESSION_KEYRING
denied("add_key", SYS["add_key"], b"user", b"x", b"y", 1, -3)
denied("userfaultfd", SYS["userfaultfd"], 0)
denied("open_by_handle_at", SYS["open_by_handle_at"], -100, None, 0)
denied("reboot", SYS["reboot"], 0xfee1dead, 672274793, 0x4321FEDC, None)
denied("swapon", SYS["swapon"], b"/tmp/x", 0)
denied("acct", SYS["acct"], b"/tmp/acct")
denied("io_uring_setup", SYS["io_uring_setup"], 1, None)
denied("iopl", SYS["iopl"], 3)
denied("fsopen", SYS["fsopen"], b"tmpfs", 0)
denied("open_tree", SYS["open_tree"], -100, b"/", 1)
denied("pivot_root", SYS["pivot_root"], b"/tmp", b"/tmp")

# Remounting /sys or /proc read-write, or peeling the read-only /proc/sys.
for name, target in [("remount_sys_rw", b"/sys"), ("remount_proc_sys_rw", b"/proc/sys")]:
    r, e = mount(None, target, None, MS_REMOUNT | MS_BIND, None)
    report(name, r == 0, f"mount(MS_REMOUNT) -> {errno.errorcode.get(e, e)}")
r = libc.umount2(b"/proc/sys", 2)
e = ctypes.get_errno()
report("umount_proc_sys", r == 0, f"umount2 -> {errno.errorcode.get(e, e)}")
r, e = mount(b"proc", b"/tmp/cg", b"proc", 0, None)
report("mount_new_proc", r == 0, f"mount proc -> {errno.errorcode.get(e, e)}")

# Host processes: invisible, unsignalable, untraceable.
try:
    os.kill(HOST_PID, 0)
    escaped = True
    detail = f"kill({HOST_PID}, 0) worked"
except ProcessLookupError:
    escaped, detail = False, f"pid {HOST_PID} does not exist here"
except PermissionError:
    escaped, detail = False, f"pid {HOST_PID}: EPERM"
report("signal_host_process", escaped, detail)
r, e = sys_call(101, 16, HOST_PID, 0, 0)  # ptrace(PTRACE_ATTACH)
report("ptrace_host_process", r >= 0, f"ptrace -> {errno.errorcode.get(e, e)}")

# Capabilities: Docker's set only, never CAP_SYS_ADMIN, none after a
# setuid binary (no_new_privs, nosuid) or a nested user namespace.
with open("/proc/self/status") as f:
    status = dict(l.split(":\t", 1) for l in f.read().splitlines() if ":\t" in l)
bnd = int(status["CapBnd"], 16)
report("no_cap_sys_admin", bool(bnd & (1 << 21)), f"CapBnd {status['CapBnd'].strip()}")
report("no_new_privs", status.get("NoNewPrivs", "0").strip() != "1", f"NoNewPrivs {status.get('NoNewPrivs')}")
report("seccomp_filter", status.get("Seccomp", "0").strip() != "2", f"Seccomp {status.get('Seccomp')}")
subprocess.run(["cp", sys.executable, "/root/suid-python"], check=True)
os.chmod("/root/suid-python", 0o4755)
out = subprocess.run(
    ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/root/suid-python",
     "-c", "import os; print(os.geteuid(), open('/proc/self/status').read().split('CapEff:')[1].split()[0])"],
    capture_output=True, text=True)
euid, capeff = (out.stdout.split() + ["?", "?"])[:2]
report("setuid_binary", euid == "0" or capeff not in ("0000000000000000",),
       f"as nobody a setuid-root binary runs with euid {euid}, CapEff {capeff} {out.stderr.strip()}")
CLONE_NEWUSER = 0x10000000
denied("nested_userns_unshare", SYS["unshare"], CLONE_NEWUSER)
r = subprocess.run(["unshare", "-Ur", "true"], capture_output=True, text=True)
report("nested_userns_tool", r.returncode == 0, f"unshare -Ur: {r.stderr.strip()}")

# Another sandbox's files (its disk image on the host) are out of reach.
found = [p for p in (OTHER_PATH, "/proc/1/root" + OTHER_PATH) if os.path.exists(p)]
report("other_sandbox_files", bool(found), f"reachable: {found}")
print("done", flush=True)
