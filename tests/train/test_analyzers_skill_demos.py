"""Skill-aware warm start: the demonstrations seen with a skill follow that skill."""

import re

import tests.train.toy_expert as toy_expert
from opid_train.analyzers.skill_demos import skill_demos
from opid_train.rollout import make_pool
from opid_train.warmstart import collect_demos
from wrappers.skills import EPISODE_SKILL_HEADER, STEP_SKILL_HEADER


def skill_of(prompt):
    for header in (STEP_SKILL_HEADER, EPISODE_SKILL_HEADER):
        if header in prompt:
            return prompt.split(header + "\n", 1)[1].split("\n", 1)[0]
    return None


def test_skill_demos_follow_their_skills():
    pool = make_pool(toy_expert.EXPERT_ID, 3)
    try:
        plain, won = collect_demos(pool, [("train", i) for i in range(3)], seed=0, progress=False)
        template, fmt = pool.config.template, pool.config.response_format
    finally:
        pool.close()
    assert won == 3 and all(d.context is not None for d in plain)
    extra = skill_demos(plain, template, fmt, share=1.0, reject_share=0.3, seed=1)
    assert len(extra) == len(plain)  # share 1: every step once more, with a skill
    endorsed = rejected = 0
    for demo in extra:
        action = fmt.parse(demo.response).action
        skill = skill_of(demo.prompt)
        named = re.findall(r"'([^']+)'", skill)
        if skill.startswith("Avoid") or "avoid these mistakes" in skill:
            rejected += 1
            assert action not in named  # the expert does not do what the skill rejects
        else:
            endorsed += 1
            if skill.startswith("Do '"):
                assert named == [action]  # a decisive step: the skill names the expert's action
            else:
                assert action in named  # the workflow lists the expert's actions
    assert endorsed > rejected > 0
    # deterministic per seed, and the plain prompt is the skill-free rendering of the same context
    assert [d.prompt for d in skill_demos(plain, template, fmt, share=1.0, reject_share=0.3, seed=1)] == [d.prompt for d in extra]
    assert all(template.render(d.context) == d.prompt for d in plain)
