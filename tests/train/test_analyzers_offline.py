"""The offline hindsight analyzer on real toy-env episodes, the on-disk cache and the local backend."""

import copy
import json

from opid_train.algorithms.config import AnalyzerConfig
from opid_train.analyzers import CachedAnalyzer, OfflineAnalyzer, make_analyzer
from opid_train.analyzers.local import LocalAnalyzer
from opid_train.policy.base import Generation
from opid_train.types import Step, Trajectory
from tests.train.test_opid_advantages import make_trajectory
from wrappers import make_agent_env


def play(toy_id, task_id, responses, traj_id=0):
    """A real episode of the toy env through the agent wrappers, as the collector records it."""
    env = make_agent_env(toy_id)
    prompt, info = env.reset(seed=0, options={"split": "train", "task_id": task_id})
    traj = Trajectory(env_id=toy_id, split="train", task=info["task"], task_id=task_id, task_type=info["task_type"],
                      group_id=0, traj_id=traj_id)
    for t, response in enumerate(responses):
        context = env.context
        prompt_after, reward, terminated, truncated, info = env.step(response)
        traj.steps.append(Step(t=t, observation=context.observation, context=context, prompt=prompt, response=response,
                               action=info["action"], reward=reward, format_valid=info["format_valid"],
                               action_valid=info["action_valid"]))
        prompt = prompt_after
        if terminated or truncated:
            traj.won, traj.score = info["won"], reward
            break
    return traj


def act(*actions):
    """Well-formed responses; a leading "!" sends the text as it is (format-invalid)."""
    return [a[1:] if a.startswith("!") else f"<think>.</think><action>{a}</action>" for a in actions]


SUCCESS = act("go left", "go left", "take key", "go right", "go right", "take key", "go right", "open door")
FAILURE = act("go right", "go left", "go right", "go left", "open door", "!no tags at all")


def test_success_gives_a_workflow_and_do_this_skills_at_critical_steps(toy_id):
    traj = play(toy_id, 2, SUCCESS)
    assert traj.won and len(traj.steps) == 8
    a = OfflineAnalyzer(max_step_skills=5).analyze(traj)
    # repeated (1), invalid (2), the step that took the key (5) and the final, rewarded one (7)
    assert sorted(a.step_skills) == [1, 2, 5, 7]
    assert "'take key'" in a.step_skills[5] and "completes the task" in a.step_skills[7]
    # after an invalid action the agent is still where it was: "go left" there again is a repeat
    again = OfflineAnalyzer(max_step_skills=5).analyze(play(toy_id, 2, act("take key", "go left", "take key", "go left")))
    assert sorted(again.step_skills) == [0, 2, 3]
    assert "repeat" in a.step_skills[1] and "not possible" in a.step_skills[2]
    assert a.episode_skill.index("'take key'") < a.episode_skill.index("'open door'")
    assert a.episode_summary.startswith("Succeeded after 8 steps: 1 invalid, 1 repeated")


def test_failure_gives_avoidance_rules_and_k_keeps_the_most_telling(toy_id):
    traj = play(toy_id, 2, FAILURE)
    assert not traj.won
    a = OfflineAnalyzer(max_step_skills=5).analyze(traj)
    assert sorted(a.step_skills) == [1, 2, 3, 4, 5]  # revisit, repeat, repeat, invalid, format
    assert "leads back" in a.step_skills[1] and "required format" in a.step_skills[5]
    assert "avoid these mistakes" in a.episode_skill and "'open door'" in a.episode_skill
    assert "required format" in a.episode_skill and "do not repeat" in a.episode_skill
    # with K = 3: the invalid steps first, then the earliest repeat
    assert sorted(OfflineAnalyzer(max_step_skills=3).analyze(traj).step_skills) == [2, 4, 5]


def test_offline_analyzer_is_deterministic(toy_id):
    trajs = [play(toy_id, 2, SUCCESS), play(toy_id, 2, FAILURE), play(toy_id, 1, act("go left", "go left"))]
    first = [OfflineAnalyzer(5).analyze(t).to_json() for t in trajs]
    second = [OfflineAnalyzer(5).analyze(copy.deepcopy(t)).to_json() for t in trajs]
    assert json.dumps(first) == json.dumps(second)
    assert OfflineAnalyzer(5).analyze(Trajectory("x", "train", "t", 0, "t", 0, 0)) is None  # no steps


class CountingAnalyzer(OfflineAnalyzer):
    def __init__(self):
        super().__init__(5)
        self.calls = 0

    def analyze(self, trajectory):
        self.calls += 1
        return None if trajectory.task == "unanalysable" else super().analyze(trajectory)


def test_cache_reads_back_skips_failures_and_survives_a_corrupt_file(tmp_path, caplog):
    trajs = [make_trajectory(0, 0, 3, True), make_trajectory(1, 0, 2, False), make_trajectory(2, 0, 2, False, task="unanalysable")]
    inner = CountingAnalyzer()
    cached = CachedAnalyzer(inner, tmp_path)
    first = cached.analyze_many(trajs)
    assert first[2] is None and inner.calls == 3
    assert cached.analyze_many(trajs) == first and inner.calls == 4  # only the failure is retried
    files = sorted(tmp_path.rglob("*.json"))
    assert len(files) == 2
    files[0].write_text("{not json")
    assert CachedAnalyzer(inner, tmp_path).analyze_many(trajs) == first and inner.calls == 6
    assert "malformed cached analysis" in caplog.text


def test_cache_key_changes_with_the_analyzer_and_the_trajectory(tmp_path):
    from opid_train.analyzers.cache import trajectory_key

    traj = make_trajectory(0, 0, 3, True)
    other = copy.deepcopy(traj)
    other.steps[1].response = "<action>go left</action>"
    assert trajectory_key(traj, "a") == trajectory_key(copy.deepcopy(traj), "a")
    assert len({trajectory_key(traj, "a"), trajectory_key(traj, "b"), trajectory_key(other, "a")}) == 3


class ScriptedGenerator:
    """Stands in for a policy's `generate` in a unit test of the local analyzer's loop."""

    def __init__(self, replies):
        self.replies, self.prompts = list(replies), []

    def generate(self, prompts, max_new_tokens, greedy=False, seed=None):
        assert greedy
        self.prompts.append(prompts)
        return [Generation(self.replies.pop(0), [], [], []) for _ in prompts]


def test_local_analyzer_batches_and_feeds_parse_errors_back():
    good = '{"episode_summary": "s", "episode_skill": "e", "step_skills": {"0": "x"}}'
    gen = ScriptedGenerator([good, "nonsense", "still nonsense", good])
    an = LocalAnalyzer(AnalyzerConfig(backend="local", parse_retries=2), gen)
    results = an.analyze_many([make_trajectory(0, 0, 2, True), make_trajectory(1, 0, 2, False)])
    assert results[0].step_skills == {0: "x"} and results[1].episode_skill == "e"
    assert [len(p) for p in gen.prompts] == [2, 1, 1]  # one batched call, then only the failed one
    assert "Your previous reply:\nstill nonsense" in gen.prompts[2][0] and "no JSON object" in gen.prompts[2][0]


def test_factory_backends_and_errors(tmp_path):
    assert isinstance(make_analyzer(AnalyzerConfig()), OfflineAnalyzer)
    cfg = AnalyzerConfig(backend="local", model="policy", cache_dir=str(tmp_path))
    assert isinstance(make_analyzer(cfg, policy=ScriptedGenerator([])), CachedAnalyzer)
    for bad, message in [(AnalyzerConfig(backend="claude"), "unknown analyzer backend"),
                         (AnalyzerConfig(backend="local"), "needs the policy"),
                         (AnalyzerConfig(backend="openai"), "model name")]:
        try:
            make_analyzer(bad)
        except ValueError as error:
            assert message in str(error)
        else:
            raise AssertionError(f"{bad} was accepted")
