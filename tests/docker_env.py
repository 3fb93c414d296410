"""Docker prerequisites for the tests; the dockerd itself lives in benchmarks.dockerd."""

from __future__ import annotations

import os
import shutil

from benchmarks.dockerd import IMAGE, Dockerd, running_dockerd
from tests.conftest import require, require_machine_marker

__all__ = ["IMAGE", "Dockerd", "require_docker", "running_dockerd"]


def require_docker() -> None:
    require_machine_marker("a dockerd of its own")
    require(os.geteuid() == 0, "needs root to run dockerd")
    require(shutil.which("dockerd") is not None, "needs dockerd (apt-get install docker.io)")
    require(os.path.exists("/bin/busybox"), "needs /bin/busybox (apt-get install busybox-static)")
