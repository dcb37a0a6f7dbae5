"""hydra's topology files (/tmp/hydra_hwloc_xmlfile_*) left by a stopped job are removed once
no hydra proxy on this machine can still need them. It starts a real process named
hydra_pmi_proxy, so it is not pure logic, and another MPI job running at the same time keeps
the files (as it should): it lives beside the distributed tests, not in unit/."""
import os
import subprocess
import tempfile
import time

from ringtrain.launch.job import HydraLeftovers


def test_hydras_leftover_topology_files_go_once_no_proxy_needs_them(tmp_path):
    def hydra_file():
        fd, path = tempfile.mkstemp(prefix="hydra_hwloc_xmlfile_", dir="/tmp")
        os.close(fd)
        return path

    earlier = hydra_file()  # another job's, from before: never ours to remove
    try:
        leftovers = HydraLeftovers()
        ours = hydra_file()
        # a live proxy that sees this /tmp may still hand its file to ranks: it keeps every new one
        proxy = tmp_path / "hydra_pmi_proxy"
        proxy.symlink_to("/bin/sleep")
        running = subprocess.Popen([str(proxy), "30"])
        try:
            for _ in range(500):  # until it has exec'd: before that its command line is this Python's
                with open(f"/proc/{running.pid}/cmdline", "rb") as f:
                    if f.read().split(b"\0", 1)[0].endswith(b"hydra_pmi_proxy"):
                        break
                time.sleep(0.01)
            leftovers.remove(patience=0.3)
            assert os.path.exists(ours) and os.path.exists(earlier)
        finally:
            running.kill()
            running.wait()
        leftovers.remove(patience=0.3)
        assert not os.path.exists(ours) and os.path.exists(earlier)
    finally:
        for path in (earlier, locals().get("ours")):
            if path and os.path.exists(path):
                os.unlink(path)
