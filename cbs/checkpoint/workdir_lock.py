"""One writer per workdir: the lock a run holds in `WORKDIR/lock.json` while it writes there.

On a local or network file system the lock is an exclusive `flock` on that file, which the kernel
drops when its holder dies however it dies (SIGKILL, OOM, a crashed VM's NFS lease expiring), so a
dead holder never blocks a workdir and a live one is never displaced. The file names the holder
(host, pid, start time) for the refusal message; a holder that ends removes it, so a file found
unlocked is a dead holder's, taken over with a warning.

Object stores (`gs://`) have no locks, and the libraries this project reads them with (etils,
tf.io.gfile) expose no create-if-absent write. There the lock is check-then-write: a run refuses a
lock file whose heartbeat (rewritten every `HEARTBEAT_S` by its holder) is younger than `STALE_S`,
takes over an older one, and reads the file back after writing it. Two runs started within the
same few seconds on one object-store workdir can therefore both pass; one run at a time, or a
restarted job whose old process still lives, is refused.

Only the primary host of a multi-host run takes the lock. It must not decide anything else.
"""

import dataclasses
import datetime
import errno
import fcntl
import json
import os
import socket
import threading
import time

from absl import logging
from etils import epath

from cbs import object_store
from cbs.checkpoint import run_dir

LOCK_FILE = run_dir.LOCK
HEARTBEAT_S = 60.0  # object stores: how often a holder rewrites its heartbeat
STALE_S = 600.0  # object stores: a heartbeat this old is a dead holder's


@dataclasses.dataclass(frozen=True)
class Holder:
  """The run holding a workdir, as its lock file names it."""

  host: str
  pid: int
  started: str  # ISO 8601, UTC
  heartbeat: float = 0.0  # time.time() of the last heartbeat (object stores)

  def describe(self) -> str:
    return f"pid {self.pid} on {self.host}, started {self.started}"


class WorkdirBusy(RuntimeError):
  """Another live run holds the workdir; the message names it."""


def _me() -> Holder:
  started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
  return Holder(socket.gethostname(), os.getpid(), started, time.time())


def _parse(text: str) -> Holder | None:
  try:
    return Holder(**json.loads(text)) if text.strip() else None
  except (ValueError, TypeError):  # half-written by a holder that died while writing it
    return None


def _read(path: epath.Path) -> Holder | None:
  try:
    return _parse(path.read_text())
  except FileNotFoundError:  # its holder has just ended
    return None


def _same_file(fd: int, path: epath.Path) -> bool:
  try:
    return os.fstat(fd).st_ino == os.stat(str(path)).st_ino
  except FileNotFoundError:
    return False


def _refusal(workdir: epath.Path, holder: Holder | None) -> WorkdirBusy:
  who = holder.describe() if holder else "a run that is starting"
  return WorkdirBusy(
    f"workdir {workdir} is in use by {who}; wait for it to end or stop it "
    "(a run that died leaves no lock behind)"
  )


def _is_local(workdir: epath.Path) -> bool:
  return not object_store.is_object_store(workdir)


class Lock:
  """A held lock; `release` (or leaving the `with` block) lets the next run take it."""

  def __init__(self, workdir: epath.Path, clock=time.time):
    self.workdir = epath.Path(workdir)
    self._path = self.workdir / LOCK_FILE
    self._clock = clock
    self._fd = None
    self._me = _me()
    self._stop = threading.Event()
    self._heartbeat = None

  def __enter__(self) -> "Lock":
    return self

  def __exit__(self, *exc_info) -> None:
    self.release()

  def acquire(self) -> "Lock":
    """Takes the lock, or raises WorkdirBusy naming the live holder; writes nothing if refused."""
    previous = self._acquire_local() if _is_local(self.workdir) else self._acquire_remote()
    if previous is not None:
      logging.warning(
        "took over the lock of workdir %s from %s, which is no longer running",
        self.workdir,
        previous.describe(),
      )
    return self

  def _acquire_local(self) -> Holder | None:
    while True:
      fd = os.open(str(self._path), os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError as e:
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
          raise
        raise _refusal(self.workdir, _read(self._path)) from None
      if _same_file(fd, self._path):
        break
      os.close(fd)  # its holder removed the file after we opened it: lock the new one
    self._fd = fd
    previous = _parse(os.pread(fd, 1 << 16, 0).decode(errors="replace"))
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(dataclasses.asdict(self._me)).encode(), 0)
    os.fsync(fd)
    return previous

  def _acquire_remote(self) -> Holder | None:
    previous = _parse(self._path.read_text()) if self._path.exists() else None
    if previous is not None and self._clock() - previous.heartbeat < STALE_S:
      raise _refusal(self.workdir, previous)
    self._write_remote()
    if _parse(self._path.read_text()) != self._me:  # another run wrote after us
      raise _refusal(self.workdir, _parse(self._path.read_text()))
    self._heartbeat = threading.Thread(target=self._beat, name="cbs-workdir-lock", daemon=True)
    self._heartbeat.start()
    return previous

  def _write_remote(self) -> None:
    self._me = dataclasses.replace(self._me, heartbeat=self._clock())
    self._path.write_text(json.dumps(dataclasses.asdict(self._me)))

  def _beat(self) -> None:
    while not self._stop.wait(HEARTBEAT_S):
      try:
        self._write_remote()
      except OSError as e:  # a missed heartbeat only shortens the time others wait
        logging.warning("could not refresh the workdir lock %s: %s", self._path, e)

  def release(self) -> None:
    """Removes the lock file (still holding it, so no one locks the removed file) and lets go."""
    if self._fd is not None:
      self._path.unlink(missing_ok=True)
      os.close(self._fd)
      self._fd = None
    if self._heartbeat is not None:
      self._stop.set()
      self._heartbeat.join()
      self._heartbeat = None
      self._path.unlink(missing_ok=True)


def live_holder(workdir: epath.PathLike, clock=time.time) -> Holder | None:
  """The live run holding `workdir`, or None; takes and changes nothing (for sweeps' status)."""
  path = epath.Path(workdir) / LOCK_FILE
  if not _is_local(path):
    holder = _read(path)
    return holder if holder and clock() - holder.heartbeat < STALE_S else None
  try:
    fd = os.open(str(path), os.O_RDONLY)
  except FileNotFoundError:
    return None
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
  except OSError as e:
    if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
      raise
    return _parse(os.pread(fd, 1 << 16, 0).decode(errors="replace")) or Holder("?", 0, "just now")
  finally:
    os.close(fd)
  return None
