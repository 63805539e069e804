"""Which GPU a worker process takes: a slot of one GPU held as a lock file (``flock``) for the
life of the process, so that workers which all see every GPU spread over them, and one that
dies frees its slot. Its only caller is :func:`psvae_opt.service.worker.run` (``--gpu auto``)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import IO

from psvae_opt.errors import ConfigError

GPU_LOCKS_ENV = "PSVAE_OPT_GPU_LOCKS"
DEFAULT_GPU_LOCKS = "/tmp/psvae-opt-gpu-locks"  # + "-UID": one private folder per user


def claim_gpu(n_gpus: int, lock_dir: str | Path | None = None, slots: int = 16) -> tuple[int, IO[str]]:
    """Pick a GPU for this process: the first one no other worker of this machine holds.

    Workers that all see every GPU (``docker compose --scale worker=N`` cannot give replicas
    different devices) take slot 0 of GPU 0, 1, ... in turn, then slot 1 of each, so N
    workers spread evenly. A slot is a lock file held (``flock``) for the life of the
    process: a worker that dies frees its GPU. The lock folder must be shared by the workers
    of one machine and by no other machine: ``lock_dir`` (``$PSVAE_OPT_GPU_LOCKS``, read by the command edge), else
    ``/tmp/psvae-opt-gpu-locks-UID``.

    The default folder is private to the user (mode 0700; refused when it is a symbolic link,
    another user's or writable by others), since in the world-writable /tmp anyone could
    plant links in a shared one: workers of one user coordinate, different users' do not.
    A folder given explicitly is used as it is (for example a group's folder); lock files
    are never followed through a symbolic link nor truncated before they are held, and
    another user's lock file counts as held.

    Returns:
        (GPU index, the open lock file: keep it open while the GPU is in use).
    """
    if n_gpus < 1:
        raise ConfigError("--gpu auto: no CUDA GPU is visible to this worker")
    given = lock_dir
    folder = Path(given or f"{DEFAULT_GPU_LOCKS}-{os.getuid()}")
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not given:
            _check_private(folder)
        return _take_slot(folder, n_gpus, slots)
    except OSError as exc:
        raise ConfigError(
            f"--gpu auto: cannot use the lock folder {folder} ({exc.strerror}); set {GPU_LOCKS_ENV}"
        ) from None


def _check_private(folder: Path) -> None:
    st = os.lstat(folder)
    problem = (
        "a symbolic link"
        if stat.S_ISLNK(st.st_mode)
        else "not a folder"
        if not stat.S_ISDIR(st.st_mode)
        else f"owned by uid {st.st_uid}"
        if st.st_uid != os.getuid()
        else "writable by other users"
        if st.st_mode & 0o022
        else ""
    )
    if problem:
        raise ConfigError(
            f"--gpu auto: the lock folder {folder} is {problem}, not this user's own; "
            f"remove it or set {GPU_LOCKS_ENV} to a folder of yours"
        )


def _take_slot(folder: Path, n_gpus: int, slots: int) -> tuple[int, IO[str]]:
    import fcntl

    for slot in range(slots):
        for gpu in range(n_gpus):
            path = folder / f"gpu{gpu}.slot{slot}.lock"
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except PermissionError:
                continue  # another user's lock file: treat the slot as held
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise ConfigError(
                        f"--gpu auto: {path} is a symbolic link, not a lock file; remove it (left untouched)"
                    ) from None
                raise
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise ConfigError(f"--gpu auto: {path} is not a regular file; remove it")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)  # ours now: the pid of a dead holder goes
            fh = os.fdopen(fd, "w")
            fh.write(f"{os.getpid()}\n")
            fh.flush()
            return gpu, fh
    raise ConfigError(f"--gpu auto: all {slots} slots of the {n_gpus} GPUs are held (lock files in {folder})")
