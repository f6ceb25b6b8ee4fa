"""Proof that the pipeline is reproducible to the bit: rerun it in a fresh clone and compare with dvc.lock.

    python scripts/reproduce_check.py                  # train, baseline and every stage after them, idle then loaded
    python scripts/reproduce_check.py --runs loaded    # only the run with CPU burners beside it
    python scripts/reproduce_check.py --from window    # window and all after it (everything: --from fuse_labelled fuse_garmin)
    python scripts/reproduce_check.py --runs idle --cpu native isa:AVX2 isa:AVX512_CORE   # under oneDNN's ISA caps
    python scripts/reproduce_check.py --runs idle --cpu native qemu:EPYC-v3 --set train.epochs=2 --only train evaluate export

The committed state (HEAD, not the working tree: commit first) is cloned into a scratch folder with
`../shared` beside it, as a new user would have it. The stages upstream of --from are checked out of
this repository's DVC cache; then `dvc repro -f --no-run-cache --downstream <from...>` runs the --from
stages and everything after them, once on the machine as it is ("idle": on a shared machine, whatever the others
run) and once with one CPU-burning process per core beside it ("loaded"). After each run every output
md5 of every rerun stage in the clone's dvc.lock is compared with the committed dvc.lock, and every
git-tracked file (metrics/, plots/, dvclive/, dvc.lock itself) with the commit. The register stage
runs against the clone's own, empty MLflow registry the first time and a registry holding that version
the second, so it also shows that no tracked output depends on what the registry holds.

Other CPUs (--cpu): `isa:X` runs with ONEDNN_MAX_CPU_ISA=X, as a user capping oneDNN would (the stages
pin their own kernel choice, har/numerics.py, so it must change nothing); `qemu:MODEL` runs every stage
command under `qemu-x86_64 -cpu MODEL` (Debian's qemu-user: another vendor, instruction set and cache sizes
as the libraries see them through CPUID, though not beyond AVX2), about 25 times slower: hence --set (fewer
epochs) and --only (these stages alone, each `dvc repro -f -s`). With --set, the committed dvc.lock is for other
params: the first run of the clone, recomposed with the overrides, is the reference the other runs must reproduce.

Prints one line per output and a verdict; exits 1 on any difference, 0 when every run reproduced
the reference exactly.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def sh(command: list[str], cwd: Path, env: dict, log=None) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env=env, text=True, stdout=log or subprocess.PIPE,
                          stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = "" if log else done.stdout[-3000:]
        raise SystemExit(f"reproduce_check: `{' '.join(command)}` failed in {cwd} (exit {done.returncode})\n{tail}")
    return done


def lock_outputs(lock_text: str, stages: set[str]) -> dict[str, str]:
    """{output path: md5} of the given stages in a dvc.lock (foreach stages as name@item)."""
    lock = yaml.safe_load(lock_text) or {}
    return {out["path"]: out.get("md5") for name, stage in (lock.get("stages") or {}).items()
            if name in stages for out in stage.get("outs", [])}


def stages_from(project: Path, env: dict, first: list[str]) -> set[str]:
    """The stages `first` and every stage downstream of them, as `dvc repro --dry` would run them."""
    done = sh(["dvc", "repro", "--dry", "-f", "--downstream", *first], project, env)
    return {line.split("'")[1] for line in done.stdout.splitlines() if line.startswith("Running stage '")}


def start_burners(n: int) -> list[subprocess.Popen]:
    """n processes that only spin: the CPU contention a busy machine gives."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.kill()
        process.wait()


def compare(project: Path, committed_lock: str, stages: set[str]) -> list[tuple[str, str, str]]:
    """(path, committed md5, reproduced md5) of each output of the rerun stages, and any changed git file."""
    expected = lock_outputs(committed_lock, stages)
    got = lock_outputs((project / "dvc.lock").read_text(), stages)
    rows = [(path, expected.get(path, "-"), got.get(path, "-")) for path in sorted(set(expected) | set(got))]
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=project,
                            capture_output=True, text=True, check=True).stdout
    changed = sorted(line[3:] for line in status.splitlines())
    rows += [(f"git: {path}", "committed", "changed") for path in changed if path not in expected]
    return rows


def emulated_python(folder: Path, cpu: str) -> Path:
    """A folder whose `python` runs this interpreter under qemu-x86_64 emulating `cpu`: first on PATH, it
    is what `dvc repro` runs each stage's `python -m stages.X` with."""
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        raise SystemExit("reproduce_check: --cpu qemu:... needs qemu-x86_64 (apt-get install qemu-user)")
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / "python"
    wrapper.write_text(f'#!/bin/sh\nexec {qemu} -cpu {cpu} {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    return folder


def run_once(project: Path, env: dict, first: list[str], burners: int, log_path: Path, *, restore: bool = True,
             only: list[str] | None = None) -> float:
    """Seconds `dvc repro` of `first` and what follows (or of the `only` stages alone) took, with `burners`
    spinning processes beside it. restore: start from the reference's files (git checkout), not from what the
    last run left."""
    if restore:
        subprocess.run(["git", "checkout", "--", "."], cwd=project, check=True)
    commands = ([["dvc", "repro", "-f", "--no-run-cache", "-s", stage] for stage in only] if only
                else [["dvc", "repro", "-f", "--no-run-cache", "--downstream", *first]])
    processes = start_burners(burners)
    started = time.perf_counter()
    try:
        with log_path.open("w") as log:
            for command in commands:
                sh(command, project, env, log=log)
    finally:
        stop(processes)
    return time.perf_counter() - started


def cpu_environment(cpu: str, env: dict, scratch: Path) -> dict:
    """The environment of a run on `cpu` (native, isa:X or qemu:MODEL)."""
    kind, _, value = cpu.partition(":")
    if kind == "native":
        return env
    if kind == "isa" and value:
        return {**env, "ONEDNN_MAX_CPU_ISA": value}
    if kind == "qemu" and value:
        return {**env, "PATH": f"{emulated_python(scratch / f'qemu-{value}', value)}:{env['PATH']}"}
    raise SystemExit(f"reproduce_check: --cpu {cpu!r}: expected native, isa:<ONEDNN ISA> or qemu:<CPU model>")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="first", nargs="+", default=["train", "baseline"],
                        help="the first stages to rerun (default: train baseline, the two that learn from the windows)")
    parser.add_argument("--runs", nargs="+", choices=["idle", "loaded"], default=["idle", "loaded"])
    parser.add_argument("--cpu", nargs="+", default=["native"],
                        help="CPUs to run on: native, isa:<ONEDNN_MAX_CPU_ISA value>, qemu:<qemu CPU model>")
    parser.add_argument("--set", nargs="+", default=[], metavar="OVERRIDE",
                        help="Hydra overrides of conf/ (train=tiny model=tiny); the first run is then the reference")
    parser.add_argument("--only", nargs="+", metavar="STAGE",
                        help="rerun these stages alone, in this order (dvc repro -f -s), instead of --from and after")
    parser.add_argument("--burners", type=int, default=os.cpu_count() or 2, help="CPU burners in the loaded run")
    parser.add_argument("--keep", action="store_true", help="keep the scratch clone (its path is printed)")
    args = parser.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="har-reproduce-"))
    project = scratch / "project"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    runs = [(cpu, run) for cpu in args.cpu for run in args.runs]
    results = {}
    try:
        # A fresh clone of the commit with the data beside it, as ./setup.sh sees it.
        sh(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(project)], scratch, env)
        (scratch / "shared").symlink_to((ROOT.parent / "shared").resolve())
        committed_lock = (project / "dvc.lock").read_text()
        stages = set(args.only) if args.only else stages_from(project, env, args.first)
        own_cache = sh(["dvc", "cache", "dir"], ROOT, env).stdout.strip().splitlines()[-1]
        sh(["dvc", "cache", "dir", "--local", own_cache], project, env)
        upstream = sorted(set(yaml.safe_load(committed_lock)["stages"]) - stages)
        sh(["dvc", "checkout", "--quiet", *upstream], project, env)  # their outputs as committed, from the cache
        sh(["dvc", "cache", "dir", "--local", str(scratch / "cache")], project, env)  # reruns leave it untouched
        print(f"reproduce_check: {project} at {sh(['git', 'rev-parse', '--short', 'HEAD'], project, env).stdout.strip()}; "
              f"rerunning {', '.join(sorted(stages))}", flush=True)
        if args.set:  # the reference: the first run with the overrides, committed in the clone
            sh([sys.executable, "-m", "stages.compose_params", *args.set], project, env)
            (reference, _), runs = runs[0], runs[1:]
            seconds = run_once(project, cpu_environment(reference, env, scratch), args.first, 0,
                               scratch / "reference.log", restore=False, only=args.only)
            sh(["git", "add", "-A"], project, env)
            sh(["git", "-c", "user.name=reproduce_check", "-c", "user.email=reproduce_check@localhost", "commit",
                "--quiet", "-m", f"reference run: {' '.join(args.set)}"], project, env)
            committed_lock = (project / "dvc.lock").read_text()
            print(f"\nreference run ({reference}, {' '.join(args.set)}): {seconds:.0f} s", flush=True)
        for cpu, run in runs:
            burners = args.burners if run == "loaded" else 0
            load_before = os.getloadavg()[0]
            seconds = run_once(project, cpu_environment(cpu, env, scratch), args.first, burners,
                               scratch / f"{cpu.replace(':', '-')}-{run}.log", only=args.only)
            rows = compare(project, committed_lock, stages)
            results[f"{cpu} {run}"] = rows
            load = f"{burners} CPU burners beside it" if burners else "no added load"
            print(f"\n{run} run on {cpu} ({load}; 1-min load average {load_before:.1f} before, "
                  f"{os.getloadavg()[0]:.1f} after): {seconds:.0f} s", flush=True)
            for path, expected, got in rows:
                print(f"  {'same     ' if expected == got else 'DIFFERENT'} {path}: {expected} -> {got}")
    finally:
        if args.keep:
            print(f"scratch clone kept: {project}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    reference_name = "the reference run" if args.set else "the committed dvc.lock"
    different = {run: [row for row in rows if row[1] != row[2]] for run, rows in results.items()}
    if not any(different.values()):
        print(f"\nREPRODUCED: {' and '.join(results)} run{'s' if len(results) > 1 else ''} gave {reference_name}, "
              f"{len(next(iter(results.values())))} outputs to the bit")
        return 0
    for run, rows in different.items():
        if rows:
            print(f"\nNOT REPRODUCED in the {run} run: {len(rows)} outputs differ from {reference_name}: "
                  f"{', '.join(path for path, _, _ in rows)}")
    if len(results) > 1 and len({repr(rows) for rows in results.values()}) == 1:
        print("(all runs agree with each other: the pipeline is deterministic, the committed dvc.lock is from "
              "other code, params or data; commit a fresh `dvc repro`)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
