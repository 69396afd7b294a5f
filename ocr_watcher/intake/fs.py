"""Filesystem facts the intake needs: is a folder on a network share?"""

from __future__ import annotations

from pathlib import Path

NETWORK_FS_TYPES = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "9p", "afs", "ceph", "glusterfs", "fuse.glusterfs"}
)
LOCAL_SETTLE_SECONDS = 10.0
NETWORK_SETTLE_SECONDS = 30.0


def mount_fstype(path: Path, mounts_file: Path = Path("/proc/mounts")) -> str | None:
    """The filesystem type of the mount that holds `path` (longest matching mount point)."""
    target = str(path.resolve())
    best, best_type = "", None
    try:
        lines = mounts_file.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point = fields[1].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, fields[2]
    return best_type


def default_settle_seconds(path: Path) -> float:
    return NETWORK_SETTLE_SECONDS if mount_fstype(path) in NETWORK_FS_TYPES else LOCAL_SETTLE_SECONDS
