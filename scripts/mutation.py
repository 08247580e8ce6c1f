"""Mutation testing of the modules where a silent bug changes results (mutmut 3, not run in CI).

Each module group is mutated on its own, in a copy of the project under --work-dir, and only its
fast tests run against its mutants (mutmut then picks, per mutant, the tests that reach the mutated
function). A surviving mutant is a behaviour no test pins: kill it with a test, or explain why it is
equivalent. Install with `pip install -e '.[mutation]'`.

    python scripts/mutation.py --list
    python scripts/mutation.py algorithms parsing --max-children 1
    python scripts/mutation.py webshop_reward --show-survivors --report mutation.json

Prints per group the mutants killed / tried and the kill ratio; with --show-survivors the diff of
every survivor.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("opid_envs", "wrappers", "opid_train")
COPIED = (*PACKAGES, "tests", "data", "scripts", "pyproject.toml")

# group -> (files to mutate, the fast tests that pin them)
ALGORITHM_TESTS = ["tests/train/test_grpo_math.py", "tests/train/test_opid_advantages.py", "tests/train/test_sdar.py",
                   "tests/train/test_learner.py", "tests/train/test_opid_teacher.py"]
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "grpo": (["opid_train/algorithms/grpo.py", "opid_train/algorithms/config.py", "opid_train/algorithms/__init__.py"],
             ALGORITHM_TESTS + ["tests/train/test_config_metrics.py"]),
    "opid": (["opid_train/algorithms/opid.py"], ALGORITHM_TESTS),
    "sdar": (["opid_train/algorithms/sdar.py"], ALGORITHM_TESTS),
    "learner": (["opid_train/learner.py"], ["tests/train/test_learner.py", "tests/train/test_grpo_math.py",
                                            "tests/train/test_policy_rollout.py"]),
    "parsing": (["wrappers/parsing.py"], ["tests/wrappers/test_parsing.py", "tests/wrappers/test_prompt_skills_recording.py"]),
    "skills": (["wrappers/skills.py"], ["tests/wrappers/test_prompt_skills_recording.py",
                                        "tests/train/test_opid_advantages.py"]),
    "core": (["opid_envs/core.py"], ["tests/envs/test_contract.py", "tests/envs/test_group.py"]),
    "webshop_reward": (["opid_envs/webshop/reward.py"], ["tests/envs/test_webshop_reward.py",
                                                         "tests/envs/test_webshop_env.py"]),
    "evaluate": (["opid_train/evaluate.py"], ["tests/train/test_paired_test.py"]),
}
ALIASES = {"algorithms": ["grpo", "opid", "sdar"]}
# mutmut's statuses; a timeout counts as killed (the mutant hung the tests)
KILLED = {"killed", "timeout", "caught by type check", "segfault"}


def prepare(group: str, work: Path) -> None:
    """A fresh copy of the project whose mutmut config mutates only this group's files."""
    files, tests = GROUPS[group]
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            shutil.copy2(src, work / name)
    pyproject = (work / "pyproject.toml").read_text()
    pyproject = re.sub(r"\n\[tool\.mutmut\]\n(?:(?!\n\[).)*", "\n", pyproject, flags=re.S)  # replaced below
    pyproject += "\n[tool.mutmut]\n" + "\n".join([
        f"source_paths = {json.dumps(list(PACKAGES))}",
        f"only_mutate = {json.dumps(files)}",
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
        'pytest_add_cli_args = ["-m", "not slow", "-p", "no:cacheprovider"]',
        'process_isolation = "forkserver"',  # torch is not fork-safe once it has run
        "use_git_change_detection = false",
    ]) + "\n"
    (work / "pyproject.toml").write_text(pyproject)


def mutmut(work: Path, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    """`python -m mutmut ARGS` in the group's copy; on timeout its whole process group (workers too) is stopped."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH="")
    proc = subprocess.Popen([sys.executable, "-m", "mutmut", *args], cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def results(work: Path) -> dict[str, str]:
    """mutant name -> status, from `mutmut results --all true`."""
    out = mutmut(work, "results", "--all", "true").stdout
    return dict(m.groups() for m in re.finditer(r"^\s+(\S+): (.+)$", out, flags=re.M))


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written; every option's help ends with its default."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("groups", nargs="*", help=f"module groups (none: all): {', '.join([*GROUPS, *ALIASES])}")
    parser.add_argument("--list", action="store_true", help="list the groups, their files and tests, and stop")
    parser.add_argument("--work-dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "opid-mutation",
                        help="where the mutated copies of the repository are made")
    parser.add_argument("--max-children", type=int, default=1, help="mutants tested in parallel")
    parser.add_argument("--timeout-minutes", type=float, default=60, help="per group")
    parser.add_argument("--show-survivors", action="store_true", help="print each survivor's diff")
    parser.add_argument("--rerun-survivors", action="store_true",
                        help="keep the group's last run, refresh its tests and retry only its survivors (after new tests)")
    parser.add_argument("--report", type=Path, help="write the per-group counts and survivors as JSON here")
    args = parser.parse_args(argv)
    groups = [g for name in args.groups or list(GROUPS) for g in ALIASES.get(name, [name])]
    unknown = set(groups) - set(GROUPS)
    if unknown:
        parser.error(f"unknown groups {sorted(unknown)}; choose from {list(GROUPS)} or {list(ALIASES)}")
    if args.list:
        for name, (files, tests) in GROUPS.items():
            print(f"{name}: mutates {' '.join(files)}\n    tests {' '.join(tests)}")
        return
    report = {}
    for group in groups:
        work = args.work_dir / group
        t0 = time.monotonic()
        names: list[str] = []
        if args.rerun_survivors and (work / "mutants").is_dir():
            names = [k for k, s in results(work).items() if s not in KILLED]
            for tests in (work / "tests", work / "mutants" / "tests"):
                shutil.rmtree(tests)
                shutil.copytree(ROOT / "tests", tests, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            print(f"{group}: retrying {len(names)} survivors with the current tests", flush=True)
        else:
            prepare(group, work)
        try:
            run = mutmut(work, "run", "--max-children", str(args.max_children), *names,
                         timeout=args.timeout_minutes * 60)
        except subprocess.TimeoutExpired:
            print(f"{group}: stopped after {args.timeout_minutes:g} minutes; the counts below are partial")
        else:
            if run.returncode != 0:
                print(run.stdout[-3000:], run.stderr[-3000:], sep="\n")
                raise SystemExit(f"mutmut failed on group {group} (exit {run.returncode}); its copy is in {work}")
        tried = {k: s for k, s in results(work).items() if s != "not checked"}
        killed = sum(s in KILLED for s in tried.values())
        survivors = sorted(k for k, s in tried.items() if s not in KILLED)
        ratio = killed / max(len(tried), 1)
        print(f"{group}: {killed}/{len(tried)} mutants killed ({100 * ratio:.1f} %), "
              f"{len(survivors)} not, in {time.monotonic() - t0:.0f} s", flush=True)
        for name in survivors:
            print(f"    {tried[name]}: {name}")
            if args.show_survivors:
                print("        " + mutmut(work, "show", name).stdout.replace("\n", "\n        "))
        report[group] = {"killed": killed, "mutants": len(tried), "ratio": ratio,
                         "survivors": {name: tried[name] for name in survivors}}
    if args.report:
        args.report.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
