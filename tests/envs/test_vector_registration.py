"""Gymnasium's own entry points on opid envs, each in a fresh interpreter: `make_vec` with its
defaults (async: shared memory) and registration without `import opid_envs`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_fresh(code: str, timeout: float = 240) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def alfworld_suite(tmp_path_factory) -> Path:
    pytest.importorskip("alfworld")
    from opid_envs.alfworld import generate

    out = tmp_path_factory.mktemp("alfworld") / "easy"
    return generate.generate_suite("easy", out, sizes={"train": 4, "valid_seen": 1, "valid_unseen": 1}, progress=False)


ASYNC_EQUALS_SYNC = """
    import gymnasium as gym
    env_id, kwargs = {env_id!r}, {kwargs!r}
    asynced = gym.make_vec(env_id, 4, vectorization_mode="async", **kwargs)
    synced = gym.make_vec(env_id, 4, vectorization_mode="sync", **kwargs)
    a, _ = asynced.reset(seed=7)
    s, _ = synced.reset(seed=7)
    assert a == s and isinstance(a, tuple) and all(isinstance(o, str) and o for o in a), (a, s)
    for step in range(2):  # the expert's moves, the same in both (SearchQA answers by the second)
        actions = asynced.call("expert_action")
        assert actions == synced.call("expert_action")
        a, ra, *_ = asynced.step(actions)
        s, rs, *_ = synced.step(actions)
        assert a == s and list(ra) == list(rs), (step, a, s)
    asynced.close(); synced.close()
    print("ok", a[0][:60])
"""


@pytest.mark.slow
@pytest.mark.parametrize("env_id", ["OPID/ALFWorld-v0", "OPID/WebShop-v0", "OPID/SearchQA-v0"])
def test_async_make_vec_with_default_shared_memory(env_id, request):
    kwargs = {"data_dir": str(request.getfixturevalue("alfworld_suite"))} if "ALFWorld" in env_id else {}
    out = run_fresh(ASYNC_EQUALS_SYNC.format(env_id=f"opid_envs:{env_id}", kwargs=kwargs))
    assert out.startswith("ok")


def test_shared_memory_round_trip_of_any_unicode():
    run_fresh("""
        import copy, multiprocessing
        from gymnasium.vector.utils import create_shared_memory, read_from_shared_memory, write_to_shared_memory
        from opid_envs import TextSpace
        space = TextSpace(max_length=40)
        shared = create_shared_memory(space, n=3)
        view = read_from_shared_memory(space, shared, n=3)
        for i, text in enumerate(["Ça coûte 5 € — ok?", "", "x" * 40]):
            write_to_shared_memory(space, i, text, shared)
        assert copy.deepcopy(view) == ("Ça coûte 5 € — ok?", "", "x" * 40)
        write_to_shared_memory(space, 1, "later [SEP] text", shared)
        assert view[1] == "later [SEP] text"  # a view of the memory, not a snapshot
        try:
            write_to_shared_memory(space, 0, "y" * 41, shared)
        except ValueError as exc:
            assert "cannot hold" in str(exc)
        else:
            raise AssertionError("an over-long observation was truncated silently")
    """)


@pytest.mark.parametrize("package", ["wrappers", "opid_train"])
def test_importing_any_opid_package_registers_the_envs(package):
    out = run_fresh(f"""
        import gymnasium as gym
        import {package}
        print(sorted(i for i in gym.registry if i.startswith("OPID/")))
    """)
    assert out.strip() == "['OPID/ALFWorld-v0', 'OPID/SearchQA-v0', 'OPID/WebShop-v0']"


def test_module_colon_id_makes_an_env_in_a_fresh_interpreter():
    out = run_fresh("""
        import sys
        import gymnasium as gym
        env = gym.make("opid_envs:OPID/SearchQA-v0")
        obs, info = env.reset(seed=0)
        print(type(env.unwrapped).__name__, "opid_envs" in sys.modules, bool(info["task"]))
    """)
    assert out.strip() == "SearchQAEnv True True"
