"""Keeping a job to itself: its user, its limits, its cgroup and its leftovers.

The runner asks `Host.confine` how to start a job; jobs that need nothing of
this module (no limits, no other user) get None and start on the fast path.
"""

import ctypes
import errno
import logging
import os
import pwd
import resource
import signal
import socket
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

from .job import Job

log = logging.getLogger("glowtools.isolation")
CGROUP_ROOT = "/sys/fs/cgroup"
CONTROLLERS = ("memory", "pids")
ANY_USER = "*"
USER_PATH = "/usr/local/bin:/usr/bin:/bin"
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Seconds of CPU a job gets between SIGXCPU (its limit) and SIGKILL.
CPU_GRACE = 1
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


class Refused(Exception):
    """A job may not run on this listener; the message says why and what to do."""


@dataclass
class Account:
    """A user a job runs as: ids, groups and the login's home and shell."""

    name: str
    uid: int
    gid: int
    groups: list[int]
    home: str
    shell: str

    def environ(self) -> dict[str, str]:
        """Returns the variables a login as this user would set."""
        path = ROOT_PATH if self.uid == 0 else USER_PATH
        return {
            "HOME": self.home,
            "USER": self.name,
            "LOGNAME": self.name,
            "SHELL": self.shell or "/bin/sh",
            "PATH": path,
        }


def account_of(name: str) -> Account:
    """Looks a user up; raises Refused if it does not exist on this host."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise Refused(f"user {name} does not exist on {socket.gethostname()}") from None
    groups = os.getgrouplist(entry.pw_name, entry.pw_gid)
    return Account(
        entry.pw_name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir, entry.pw_shell
    )


def own_name() -> str:
    """Returns the listener's user name, or its uid where it has no name."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


class UserPolicy:
    """Decides which user a job runs as, from --allow-user and who the listener is.

    A job naming no user, or the listener's own, runs as the listener. A root
    listener given --allow-user switches to those users (`*`: any but root) and
    then runs root jobs, named or not, only if root is among them. A listener
    that is not root runs no job naming another user.
    """

    def __init__(self, allowed: list[str]) -> None:
        self.allowed = set(allowed)
        self.me = own_name()
        self.is_root = os.geteuid() == 0

    def account(self, user: str | None) -> Account | None:
        """Returns the account to switch to, None for the listener's own.

        Raises Refused with the reason if the job may not run here.
        """
        if user is None or user == self.me:
            self._check_own(user)
            return None
        if not self.is_root:
            raise Refused(
                f"job asks for user {user}; this listener runs as {self.me} and "
                f"cannot switch users (run glow-listen as root with --allow-user "
                f"{user}, or put the job without --user)"
            )
        if user not in self.allowed and (
            ANY_USER not in self.allowed or user == "root"
        ):
            raise Refused(
                f"job asks for user {user}, who is not allowed here (start "
                f"glow-listen with --allow-user {user})"
            )
        account = account_of(user)
        if account.uid == 0:
            self._check_own(user)
            return None
        return account

    def _check_own(self, user: str | None) -> None:
        # A root listener that switches users keeps root for jobs it allows by name.
        if self.is_root and self.allowed and "root" not in self.allowed:
            asked = f"asks for user {user}" if user else "names no user"
            raise Refused(
                f"job {asked} and would run as root; this listener runs root jobs "
                "only with --allow-user root (put the job with --user NAME)"
            )


@dataclass
class JobCgroup:
    """The cgroup directories of one job (one per controller on v1, one on v2)."""

    dirs: dict[str, str]
    version: int
    _fds: list[int] = field(default_factory=list)

    def set_limits(self, limits: dict[str, int]) -> None:
        """Writes the job's memory and process limits into its cgroup."""
        memory, nproc = limits.get("memory"), limits.get("nproc")
        if self.version == 2:
            self._write("memory", "memory.max", memory)
            self._write("memory", "memory.swap.max", memory and 0, optional=True)
            self._write("pids", "pids.max", nproc)
        else:
            self._write("memory", "memory.limit_in_bytes", memory)
            self._write("memory", "memory.memsw.limit_in_bytes", memory, optional=True)
            self._write("pids", "pids.max", nproc)

    def _write(
        self, ctrl: str, name: str, value: int | None, optional: bool = False
    ) -> None:
        if value is None:
            return
        path = os.path.join(self.dirs[ctrl], name)
        if optional and not os.path.exists(path):
            return
        with open(path, "w") as stream:
            stream.write(str(value))

    def open_procs(self) -> list[int]:
        """Opens the cgroup.procs files a child writes itself into before exec."""
        for path in set(self.dirs.values()):
            target = os.path.join(path, "cgroup.procs")
            self._fds.append(os.open(target, os.O_WRONLY | os.O_CLOEXEC))
        return self._fds

    def close_procs(self) -> None:
        """Closes what open_procs opened; the parent calls it once the child runs."""
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def counters(self) -> dict[str, int]:
        """Returns how often the job hit a limit: oom_kill and pids max."""
        memory = "memory.events" if self.version == 2 else "memory.oom_control"
        return {
            "oom_kill": _counter(self.dirs["memory"], memory, "oom_kill"),
            "pids_max": _counter(self.dirs["pids"], "pids.events", "max"),
        }

    def kill(self) -> None:
        """Kills every process left in the cgroup; returns once it is empty."""
        kill_file = os.path.join(self.dirs["memory"], "cgroup.kill")
        if self.version == 2 and os.path.exists(kill_file):
            with open(kill_file, "w") as stream:
                stream.write("1")
        procs = os.path.join(self.dirs["pids"], "cgroup.procs")
        for _ in range(200):
            pids = _read_pids(procs)
            if not pids:
                return
            for pid in pids:
                _kill(pid, signal.SIGKILL)
            reap_orphans(set(pids))
            time.sleep(0.01)
        log.warning("cgroup %s still has processes after SIGKILL", procs)

    def signal(self, signum: int) -> None:
        """Sends a signal to every process of the job, whatever its session."""
        for pid in _read_pids(os.path.join(self.dirs["pids"], "cgroup.procs")):
            _kill(pid, signum)

    def remove(self) -> None:
        """Removes the cgroup directories; the cgroup must be empty."""
        for path in set(self.dirs.values()):
            for _ in range(50):
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        log.warning("cannot remove cgroup %s: %s", path, exc.strerror)
                        break
                    time.sleep(0.01)


class Cgroups:
    """Where this listener makes a cgroup per job, and which version it is."""

    def __init__(self, version: int, parents: dict[str, str]) -> None:
        self.version = version
        self.parents = parents

    def describe(self) -> str:
        """Returns where job cgroups go, for the start-up log line."""
        where = ", ".join(sorted(set(self.parents.values())))
        return f"cgroup v{self.version} ({where})"

    def create(self, name: str) -> JobCgroup:
        """Makes the job's cgroup; raises OSError if the host refuses."""
        dirs = {}
        for ctrl, parent in self.parents.items():
            path = os.path.join(parent, name)
            if path not in dirs.values():
                _fresh_dir(path)
            dirs[ctrl] = path
        return JobCgroup(dirs, self.version)

    def close(self) -> None:
        """Removes the listener's own parent cgroups, if nothing is left in them."""
        for path in set(self.parents.values()):
            _rmdir_quietly(path)


def detect_cgroups() -> Cgroups | None:
    """Finds cgroup v2 or v1 memory and pids controllers this process may use."""
    try:
        if os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers")):
            return _cgroups_v2()
        return _cgroups_v1()
    except OSError as exc:
        log.debug("cgroups unusable: %s", exc)
        return None


def _cgroups_v1() -> Cgroups | None:
    own = _own_cgroups()
    parents = {}
    for ctrl in CONTROLLERS:
        mount = os.path.join(CGROUP_ROOT, ctrl)
        if ctrl not in own or not os.path.exists(os.path.join(mount, "cgroup.procs")):
            return None
        _remove_stale(mount + own[ctrl], "glow-listen-")
        parent = os.path.join(mount + own[ctrl], f"glow-listen-{os.getpid()}")
        _fresh_dir(parent)
        parents[ctrl] = parent
    return Cgroups(1, parents)


def _cgroups_v2() -> Cgroups | None:
    # cgroup v2 lets a group with processes in it hand no controllers down, so
    # the listener moves itself into a leaf first (systemd: Delegate=yes).
    base = CGROUP_ROOT + _own_cgroups().get("", "/")
    offered = _read(os.path.join(base, "cgroup.controllers")).split()
    if not all(ctrl in offered for ctrl in CONTROLLERS):
        return None
    enable = " ".join(f"+{ctrl}" for ctrl in CONTROLLERS)
    if base != CGROUP_ROOT:
        leaf = os.path.join(base, "listener")
        os.makedirs(leaf, exist_ok=True)
        _write_file(os.path.join(leaf, "cgroup.procs"), "0")
    _write_file(os.path.join(base, "cgroup.subtree_control"), enable)
    _remove_stale(base, "glow-jobs-")
    parent = os.path.join(base, f"glow-jobs-{os.getpid()}")
    _fresh_dir(parent)
    _write_file(os.path.join(parent, "cgroup.subtree_control"), enable)
    return Cgroups(2, dict.fromkeys(CONTROLLERS, parent))


def _own_cgroups() -> dict[str, str]:
    """Returns this process's cgroup path per controller ('' for v2)."""
    own = {}
    for line in _read("/proc/self/cgroup").splitlines():
        _, ctrls, path = line.split(":", 2)
        for ctrl in ctrls.split(","):
            own[ctrl] = path.rstrip("/")
    return own


def _remove_stale(folder: str, prefix: str) -> None:
    """Removes the empty cgroups of listeners that died without removing them."""
    for name in os.listdir(folder):
        pid = name[len(prefix) :]
        if not name.startswith(prefix) or os.path.exists(f"/proc/{pid}"):
            continue
        stale = os.path.join(folder, name)
        for job in os.listdir(stale):
            _rmdir_quietly(os.path.join(stale, job))
        _rmdir_quietly(stale)


def _rmdir_quietly(path: str) -> None:
    if os.path.isdir(path):
        try:
            os.rmdir(path)
        except OSError:
            pass


def _fresh_dir(path: str) -> None:
    # makedirs: a listener in another pid namespace may take our parent for stale.
    os.makedirs(path, exist_ok=True)


class Confinement:
    """How one job starts and what is left to do once it has ended."""

    def __init__(self, job: Job, account: Account | None, cgroup: JobCgroup | None):
        self.job = job
        self.account = account
        self.cgroup = cgroup

    def environ(self) -> dict[str, str]:
        """Returns the variables the account sets over the listener's own."""
        return self.account.environ() if self.account else {}

    def preexec(self) -> Callable[[], None]:
        """Returns what the child runs before exec: cgroup, limits, nice, user."""
        fds = self.cgroup.open_procs() if self.cgroup else []
        rlimits = _rlimits(self.job.limits, self.cgroup is not None)
        nice = self.job.limits.get("nice")
        account = self.account

        def confine() -> None:
            for fd in fds:
                os.write(fd, b"0")
            for which, value in rlimits:
                resource.setrlimit(which, value)
            if nice is not None:
                os.setpriority(os.PRIO_PROCESS, 0, nice)
            if account:
                os.setgroups(account.groups)
                os.setgid(account.gid)
                os.setuid(account.uid)

        return confine

    def started(self) -> None:
        """Lets go of what only the child needed."""
        if self.cgroup:
            self.cgroup.close_procs()

    def signal(self, signum: int) -> None:
        """Signals the job's processes that left its session, where they are known."""
        if self.cgroup:
            self.cgroup.signal(signum)

    def reason(self, sig: int | None, stderr_tail: str) -> str | None:
        """Names the limit a failed job ran into, if any."""
        limits = self.job.limits
        counters = self.cgroup.counters() if self.cgroup else {}
        if counters.get("oom_kill"):
            return f"memory limit {_size(limits['memory'])} exceeded"
        if counters.get("pids_max"):
            return f"nproc limit {limits['nproc']} reached"
        if sig == signal.SIGXCPU and "cpu_time" in limits:
            return f"cpu-time limit {limits['cpu_time']} s exceeded"
        return _reason_from_stderr(limits, stderr_tail, self.cgroup is not None)

    def end(self) -> None:
        """Kills what is left in the job's cgroup and removes it."""
        if self.cgroup:
            self.cgroup.close_procs()
            self.cgroup.kill()
            self.cgroup.remove()
            self.cgroup = None


# Words the C library and common runtimes print when a limit bites; used only
# where no cgroup counter can say which limit it was.
_STDERR_SIGNS = {
    "nofile": ("too many open files",),
    "memory": ("cannot allocate memory", "memoryerror", "out of memory"),
    "nproc": ("resource temporarily unavailable", "cannot fork"),
}


def _reason_from_stderr(limits: dict, tail: str, in_cgroup: bool) -> str | None:
    text = tail.lower()
    for name, signs in _STDERR_SIGNS.items():
        if name not in limits or (in_cgroup and name != "nofile"):
            continue
        if any(sign in text for sign in signs):
            value = _size(limits[name]) if name == "memory" else limits[name]
            return f"{name} limit {value} reached"
    return None


def _rlimits(limits: dict[str, int], in_cgroup: bool) -> list[tuple[int, tuple]]:
    chosen = []
    if "cpu_time" in limits:
        seconds = limits["cpu_time"]
        chosen.append((resource.RLIMIT_CPU, (seconds, seconds + CPU_GRACE)))
    if "nofile" in limits:
        chosen.append((resource.RLIMIT_NOFILE, (limits["nofile"],) * 2))
    if "memory" in limits and not in_cgroup:
        chosen.append((resource.RLIMIT_AS, (limits["memory"],) * 2))
    if "nproc" in limits and not in_cgroup:
        chosen.append((resource.RLIMIT_NPROC, (limits["nproc"],) * 2))
    return chosen


def _size(size: int) -> str:
    for unit, factor in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


class Host:
    """What this host offers jobs, decided once when the listener starts."""

    def __init__(self, allowed_users: list[str], use_cgroups: bool = True) -> None:
        self.users = UserPolicy(allowed_users)
        self.use_cgroups = use_cgroups
        self.cgroups = detect_cgroups() if use_cgroups else None
        self.niceness = os.getpriority(os.PRIO_PROCESS, 0)
        self.subreaper = become_subreaper()
        self._children = _open_children() if self.subreaper else None
        self.running: set[str] = set()
        # The CPUs a job is given once started, when its listener's are fewer.
        self.job_cpus: set[int] | None = None
        if self.users.is_root and self.users.allowed:
            drop_supplementary_groups()

    def describe(self) -> str:
        """Returns one line on how jobs are confined here, for the start-up log."""
        if self.cgroups:
            limits = f"memory and nproc limits by {self.cgroups.describe()}"
        else:
            why = "no usable cgroups" if self.use_cgroups else "cgroups not used"
            limits = f"{why}: memory and nproc limits by rlimits, per process"
        who = f"runs as {self.users.me}"
        if self.users.is_root:
            allowed = ", ".join(sorted(self.users.allowed)) or "no other user"
            who += f", may switch to {allowed}"
        return f"{limits}; {who}"

    def confine(self, job: Job, name: str) -> Confinement | None:
        """Returns how to start the job, None if it needs nothing special.

        Raises Refused if the job may not run here.
        """
        account = self.users.account(job.user)
        limits = job.limits
        if account is None and not limits:
            return None
        nice = limits.get("nice")
        if nice is not None and nice < self.niceness:
            raise Refused(
                f"job asks for nice {nice}; jobs here run at {self.niceness} or "
                "nicer (give --nice 0 or more)"
            )
        cgroup = None
        if self.cgroups and ("memory" in limits or "nproc" in limits):
            try:
                cgroup = self.cgroups.create(name)
                cgroup.set_limits(limits)
            except OSError as exc:
                if cgroup:
                    cgroup.remove()
                raise Refused(f"cannot make the job's cgroup: {exc}") from None
        return Confinement(job, account, cgroup)

    def sweep(self, ended: str | None = None) -> None:
        """Ends what jobs no longer running (or job `ended`) left behind.

        Cheap when nothing was left: one read of this process's children.
        """
        if self._children is None:
            return
        orphans = os.pread(self._children, 65536, 0).split()
        if orphans:
            sweep_orphans([int(pid) for pid in orphans], set(self.running) - {ended})

    def adopt_orphans(self) -> None:
        """Makes a forked worker the one its jobs' orphans go to, not the listener."""
        if self._children is not None:
            os.close(self._children)
        self.subreaper = become_subreaper()
        self._children = _open_children() if self.subreaper else None
        self.running = set()

    def close(self) -> None:
        """Removes the listener's cgroups and ends what its jobs left behind."""
        self.sweep()
        if self._children is not None:
            os.close(self._children)
            self._children = None
        if self.cgroups:
            self.cgroups.close()


def set_parent_death_signal(signum: int) -> None:
    """Has the kernel send `signum` to this process when its parent ends."""
    if _libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        log.warning("cannot ask for a signal when the listener ends")


def become_subreaper() -> bool:
    """Makes orphans of jobs (even those that called setsid) children of ours."""
    if _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log.warning("cannot become a subreaper: detached job processes may linger")
        return False
    return True


def sweep_orphans(orphans: list[int], running: set[str]) -> int:
    """Kills and reaps orphaned job processes whose job is not running.

    `running` holds the GLOW_JOB_ID of every running job; a process without one
    is killed only when no job runs. Returns how many processes were ended.
    """
    ended = 0
    for pid in orphans:
        job_id = _job_of(pid)
        if job_id in running or (job_id is None and running):
            continue
        _kill(pid, signal.SIGKILL)
        ended += 1
    reap_orphans(set(orphans), wait=0.5 if ended else 0)
    return ended


def reap_orphans(pids: set[int], wait: float = 0) -> None:
    """Collects those of `pids` that are our children and have exited.

    Waits up to `wait` seconds for killed ones to finish dying.
    """
    left = set(pids)
    until = time.monotonic() + wait
    while True:
        left = {pid for pid in left if not _reaped(pid)}
        if not left or time.monotonic() >= until:
            return
        time.sleep(0.005)


def _reaped(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return True


def _open_children() -> int | None:
    # Orphans go to the subreaper's main thread, which starts no job itself, so
    # its children are exactly the orphans; the file is read again with pread.
    try:
        return os.open(f"/proc/self/task/{os.getpid()}/children", os.O_RDONLY)
    except OSError as exc:
        log.warning("cannot list orphans (%s): what jobs detach may linger", exc)
        return None


def _job_of(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as stream:
            environ = stream.read()
    except OSError:
        return None
    for item in environ.split(b"\0"):
        if item.startswith(b"GLOW_JOB_ID="):
            return item[12:].decode(errors="replace")
    return None


@contextmanager
def acting_as(account: Account | None):
    """Opens files in this thread with the account's rights (setfsuid).

    Only the calling thread changes; supplementary groups are not used.
    """
    if account is None:
        yield
        return
    old_gid = _libc.setfsgid(account.gid)
    old_uid = _libc.setfsuid(account.uid)
    try:
        yield
    finally:
        _libc.setfsuid(old_uid)
        _libc.setfsgid(old_gid)


def drop_supplementary_groups() -> None:
    """Leaves root's own groups, so that acting_as grants no access through them."""
    if os.geteuid() == 0:
        os.setgroups([])


def _counter(path: str, name: str, key: str) -> int:
    for line in _read(os.path.join(path, name), "").splitlines():
        word, _, value = line.partition(" ")
        if word == key and value.strip().isdigit():
            return int(value)
    return 0


def _read_pids(path: str) -> list[int]:
    return [int(pid) for pid in _read(path, "").split()]


def _read(path: str, default: str | None = None) -> str:
    try:
        with open(path) as stream:
            return stream.read()
    except OSError:
        if default is None:
            raise
        return default


def _write_file(path: str, text: str) -> None:
    with open(path, "w") as stream:
        stream.write(text)


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
