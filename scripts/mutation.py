"""Mutation testing of the modules where a silent bug changes results (mutmut 3, not run in CI).

Each module group is mutated on its own, in a copy of the project under --work-dir, and only its
fast tests run against its mutants (mutmut then picks, per mutant, the tests that reach the mutated
function). A surviving mutant is a behaviour no test pins: kill it with a test, or explain why it is
equivalent (docs/MUTATION.md lists the equivalent ones). Functions that cannot change a result
(rendering, I/O helpers, a random agent) are listed in NOT_MUTATED and left out, in the copy only,
with mutmut's `# pragma: no mutate block`. Install with `pip install -e '.[mutation]'`.

    python scripts/mutation.py --list
    python scripts/mutation.py algorithms parsing --max-children 1
    python scripts/mutation.py core --survivors survivors.md --report mutation.json

Prints a table (group, mutants, killed, survived, ratio); --survivors writes every survivor's diff as
markdown, ready to paste.
"""

from __future__ import annotations

import argparse
import fnmatch
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
    "learner": (["opid_train/learner.py"], ["tests/train/test_checkpoints.py", "tests/train/test_learner.py"]),
    "learner_update": (["opid_train/learner.py"], ALGORITHM_TESTS + [  # with the one update the rollout tests run
        "tests/train/test_policy_rollout.py::test_update_skips_rows_without_loss_and_takes_the_same_step"]),
    "parsing": (["wrappers/parsing.py"], ["tests/wrappers/test_parsing.py", "tests/wrappers/test_prompt_skills_recording.py"]),
    "skills": (["wrappers/skills.py"], ["tests/wrappers/test_prompt_skills_recording.py",
                                        "tests/train/test_opid_advantages.py"]),
    "core": (["opid_envs/core.py"], ["tests/envs/test_contract.py", "tests/envs/test_group.py",
                                     "tests/envs/test_vector_registration.py", "tests/wrappers/test_parsing.py"]),
    "webshop_reward": (["opid_envs/webshop/reward.py"], ["tests/envs/test_webshop_reward.py",
                                                         "tests/envs/test_webshop_env.py"]),
    "evaluate": (["opid_train/evaluate.py"], ["tests/train/test_paired_test.py", "tests/train/test_policy_rollout.py"]),
    "searchqa_reward": (["opid_envs/searchqa/scoring.py", "opid_envs/searchqa/env.py"],
                        ["tests/envs/test_searchqa_env.py"]),
    "alfworld_step": (["opid_envs/alfworld/env.py"],  # the easy suite only: the medium one is generated per run
                      ["tests/envs/test_alfworld.py::test_reward_is_zero_until_the_winning_step",
                       "tests/envs/test_alfworld.py::test_step_bookkeeping_on_the_easy_suite"]),
}
ALIASES = {"algorithms": ["grpo", "opid", "sdar"]}
# learner.py in two groups: the update (the loss the algorithm's advantages go into) and checkpoint/resume
LEARNER_UPDATE = ["make_batch", "token_weights", "chunks", "score_in_chunks", "Learner.__init__", "Learner.update",
                  "Learner.loss_rows"]
LEARNER_CHECKPOINTS = ["Learner.save_checkpoint", "folder_update", "checkpoint_folders", "checkpoint_update",
                       "latest_checkpoint", "load_newest_checkpoint", "verl_hf_folder", "model_folder_of"]
# functions left out of a group's mutation, per file: none of them can change a result (a score, an
# advantage, a statistic, a step's bookkeeping, what a checkpoint holds), or another group mutates them
NOT_MUTATED: dict[str, dict[str, list[str]]] = {
    "core": {"opid_envs/core.py": [  # the console view, a random agent's actions, import and id look-ups
        "TextEnv.render", "TextEnv.random_action", "TextSpace.sample", "TextSpace.__repr__",
        "MissingDependencyError.__init__", "require", "resolve_env_id"]},
    "learner": {"opid_train/learner.py": LEARNER_UPDATE},  # checkpoint/resume only: the update is learner_update's
    "learner_update": {"opid_train/learner.py": LEARNER_CHECKPOINTS},  # the update only: checkpoints are learner's
    "searchqa_reward": {"opid_envs/searchqa/env.py": [  # the expert and random agents, the shared index
        "shared_retriever", "SearchQAEnv.expert_action", "SearchQAEnv.random_action"]},
    "alfworld_step": {"opid_envs/alfworld/env.py": [  # step bookkeeping only: loading, paths, experts are not
        "keep_argv", "load_textworld", "ALFWorldEngine.__init__", "ALFWorldEngine.load", "ALFWorldEngine.facts",
        "ALFWorldEngine.planner_plan", "ALFWorldEngine.walkthrough", "_fix_hint", "ALFWorldEnv.__init__",
        "ALFWorldEnv._check_root", "ALFWorldEnv.games", "ALFWorldEnv._collect", "ALFWorldEnv._load",
        "ALFWorldEnv.expert_action", "ALFWorldEnv.walkthrough", "_marked_unsolvable"]},
}
# mutmut's statuses; a timeout counts as killed (the mutant hung the tests), and the table shows how many
KILLED = {"killed", "timeout", "caught by type check", "segfault"}


def prepare(group: str, work: Path) -> None:
    """A fresh copy of the project whose mutmut config mutates only this group's files."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            shutil.copy2(src, work / name)
    configure(group, work)
    for name, functions in NOT_MUTATED.get(group, {}).items():
        path = work / name
        path.write_text(without_mutation(path.read_text(), functions, name))


def configure(group: str, work: Path) -> None:
    """The copy's [tool.mutmut]: this group's files and tests."""
    files, tests = GROUPS[group]
    pyproject = (work / "pyproject.toml").read_text()
    pyproject = re.sub(r"\n\[tool\.mutmut\]\n(?:(?!\n\[).)*", "\n", pyproject, flags=re.S)  # replaced below
    pyproject += "\n[tool.mutmut]\n" + "\n".join([
        f"source_paths = {json.dumps(list(PACKAGES))}",
        f"only_mutate = {json.dumps(files)}",
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
        'pytest_add_cli_args = ["-m", "not slow", "-p", "no:cacheprovider"]',
        'process_isolation = "forkserver"',  # torch is not fork-safe once it has run
        # CPU-time limit per mutant: (tests' time + 10 s) x 15 x 2. mutmut's 1 s counted a fixture that trains
        # a tiny policy on a loaded machine as a hang, i.e. a kill
        "timeout_constant = 10",
        "use_git_change_detection = false",
    ]) + "\n"
    (work / "pyproject.toml").write_text(pyproject)


def without_mutation(source: str, functions: list[str], filename: str) -> str:
    """The source with mutmut's `# pragma: no mutate block` on each named function ('Class.method' or 'function')."""
    import libcst as cst  # mutmut's own parser

    pragma = cst.TrailingWhitespace(whitespace=cst.SimpleWhitespace("  "), comment=cst.Comment("# pragma: no mutate block"))

    class Marker(cst.CSTTransformer):
        def __init__(self):
            self.scope: list[str] = []
            self.found: set[str] = set()

        def visit_ClassDef(self, node):
            self.scope.append(node.name.value)

        def leave_ClassDef(self, original, updated):
            self.scope.pop()
            return updated

        def visit_FunctionDef(self, node):
            self.scope.append(node.name.value)

        def leave_FunctionDef(self, original, updated):
            name = ".".join(self.scope)
            self.scope.pop()
            if name not in functions:
                return updated
            self.found.add(name)
            return updated.with_changes(body=updated.body.with_changes(header=pragma))

    marker = Marker()
    marked = cst.parse_module(source).visit(marker)
    missing = set(functions) - marker.found
    if missing:
        raise SystemExit(f"NOT_MUTATED names functions that {filename} does not define: {sorted(missing)}")
    return marked.code


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


def statuses(work: Path, update: bool = False) -> dict[str, str]:
    """Each mutant's last verdict, kept across reruns in statuses.json: mutmut forgets every verdict when
    its config changes (a rerun's tests or limits), and a rerun retries only the survivors."""
    saved = work / "statuses.json"
    known = json.loads(saved.read_text()) if saved.exists() else {}
    if update or not known:
        known.update({k: s for k, s in results(work).items() if s != "not checked" or k not in known})
        saved.write_text(json.dumps(known, indent=1))
    return known


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("groups", nargs="*", help=f"module groups (none: all): {', '.join([*GROUPS, *ALIASES])}")
    parser.add_argument("--list", action="store_true", help="list the groups, their files and tests, and stop")
    parser.add_argument("--work-dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "opid-mutation",
                        help="where the mutated copies of the repository are made")
    parser.add_argument("--max-children", type=int, default=1, help="mutants tested in parallel")
    parser.add_argument("--timeout-minutes", type=float, default=60, help="per group")
    parser.add_argument("--survivors", type=Path, help="write every survivor's diff here, as markdown")
    parser.add_argument("--rerun-survivors", action="store_true",
                        help="keep the group's last run, refresh its tests and retry only its survivors and timeouts "
                             "(after new tests)")
    parser.add_argument("--mutants", nargs="+", metavar="GLOB",
                        help="with --rerun-survivors: retry only the survivors whose names match one of these "
                             "patterns (fnmatch, e.g. '*episode_advantages__mutmut_36' or '*grpo.x_group_*')")
    parser.add_argument("--report", type=Path, help="write the per-group counts and survivors as JSON here")
    args = parser.parse_args(argv)
    groups = [g for name in args.groups or list(GROUPS) for g in ALIASES.get(name, [name])]
    unknown = set(groups) - set(GROUPS)
    if args.mutants and not args.rerun_survivors:
        parser.error("--mutants selects among the survivors of a previous run: use it with --rerun-survivors")
    if unknown:
        parser.error(f"unknown groups {sorted(unknown)}; choose from {list(GROUPS)} or {list(ALIASES)}")
    if args.list:
        for name, (files, tests) in GROUPS.items():
            print(f"{name}: mutates {' '.join(files)}\n    tests {' '.join(tests)}")
            for path, functions in NOT_MUTATED.get(name, {}).items():
                print(f"    not mutated in {path}: {' '.join(functions)}")
        return
    report = {}
    for group in groups:
        work = args.work_dir / group
        t0 = time.monotonic()
        names: list[str] = []
        if args.rerun_survivors and (work / "mutants").is_dir():
            names = [k for k, s in statuses(work).items() if s not in KILLED or s == "timeout"]
            if args.mutants:
                names = [k for k in names if any(fnmatch.fnmatch(k, pattern) for pattern in args.mutants)]
            for tests in (work / "tests", work / "mutants" / "tests"):
                shutil.rmtree(tests)
                shutil.copytree(ROOT / "tests", tests, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            configure(group, work)
            print(f"{group}: retrying {len(names)} survivors, timeouts and unchecked mutants with the current tests",
                  flush=True)
        else:
            prepare(group, work)
        if args.rerun_survivors and not names:  # `mutmut run` without names would retry every mutant
            print(f"{group}: no survivor to retry")
        else:
            try:
                run = mutmut(work, "run", "--max-children", str(args.max_children), *names,
                             timeout=args.timeout_minutes * 60)
            except subprocess.TimeoutExpired:
                print(f"{group}: stopped after {args.timeout_minutes:g} minutes; the counts below are partial")
            else:
                if run.returncode != 0:
                    print(run.stdout[-3000:], run.stderr[-3000:], sep="\n")
                    raise SystemExit(f"mutmut failed on group {group} (exit {run.returncode}); its copy is in {work}")
        tried = {k: s for k, s in statuses(work, update=True).items() if s != "not checked"}
        killed = sum(s in KILLED for s in tried.values())
        survivors = sorted(k for k, s in tried.items() if s not in KILLED)
        print(f"{group}: {killed}/{len(tried)} killed in {time.monotonic() - t0:.0f} s", flush=True)
        diffs = mutant_diffs(work, survivors)
        report[group] = {"killed": killed, "mutants": len(tried), "ratio": killed / max(len(tried), 1),
                         "timeouts": sorted(k for k, s in tried.items() if s == "timeout"),
                         "survivors": {name: {"status": tried[name], "diff": diffs[name]} for name in survivors}}
    print(table(report))
    if args.survivors:
        args.survivors.write_text(survivors_markdown(report))
        print(f"survivors written to {args.survivors}")
    if args.report:
        args.report.write_text(json.dumps(report, indent=2))


DIFFS = """
import json, sys
from mutmut.__main__ import find_mutant
from mutmut.mutation.diff_apply import get_diff_for_mutant
print(json.dumps({name: get_diff_for_mutant(name, path=find_mutant(name).path) for name in json.loads(sys.argv[1])}))
"""


def mutant_diffs(work: Path, names: list[str]) -> dict[str, str]:
    """The changed lines of each mutant, from one process (a `mutmut show` each costs seconds)."""
    if not names:
        return {}
    out = subprocess.run([sys.executable, "-c", DIFFS, json.dumps(names)], cwd=work, capture_output=True, text=True,
                         check=True, env=dict(os.environ, PYTHONPATH="")).stdout
    return {name: "\n".join(line for line in diff.splitlines() if line[:1] in "-+" and line[:3] not in ("---", "+++"))
            for name, diff in json.loads(out).items()}


def table(report: dict) -> str:
    rows = [(g, r["mutants"], r["killed"], len(r["timeouts"]), len(r["survivors"]), f"{100 * r['ratio']:.1f} %")
            for g, r in report.items()]
    if len(report) > 1:
        total, killed, timeouts = (sum(r[i] for r in rows) for i in (1, 2, 3))
        rows.append(("all", total, killed, timeouts, total - killed, f"{100 * killed / max(total, 1):.1f} %"))
    head = ("group", "mutants", "killed", "of which timed out", "survived", "ratio")
    widths = [max(len(str(row[i])) for row in [head, *rows]) for i in range(len(head))]
    line = lambda row: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
    return "\n".join([line(head), *map(line, rows)])


def survivors_markdown(report: dict) -> str:
    """Every survivor with its status and diff, per group: the list docs/MUTATION.md explains."""
    parts = []
    for group, r in report.items():
        parts.append(f"### {group}: {len(r['survivors'])} of {r['mutants']} survived\n")
        for name, s in r["survivors"].items():
            parts.append(f"- `{name}` ({s['status']})\n\n```diff\n{s['diff']}\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    main()
