"""OPID: On-Policy Skill Distillation (arXiv 2606.26790), on top of multi-turn GRPO.

For a group G_q of N trajectories of one task, each step t of trajectory tau with sampled
response y (tokens l), in the paper's order:

1. Outcome advantage (GRPO, `grpo.py`), broadcast over the response mask m:
       A_ep[tau,t,l]    = (R(tau) - mean_q R) / std_q R * m[tau,t,l]
2. Hindsight skills from the analyzer (`opid_train.analyzers`) for every finished trajectory:
       A(tau)           = (s_ep[tau], {s_step[tau,t] : t in C_tau})      C_tau = critical steps
3. Critical-first routing (`wrappers.skills.route_skills`):
       s[tau,t]         = s_step[tau,t] if t in C_tau else s_ep[tau]
   (`additive`, the paper's no-routing ablation, scores both at critical steps; `episode_only`
   and `step_only` keep one level.)
4. Self-teacher re-scoring: the old policy scores the same response under the skill-augmented
   prompt h~ = H(h, s) (one batched `policy.score` call for every teacher prompt of the batch):
       l_skill[tau,t,l] = log pi_old(y_l | h~, y_<l),   l_old[tau,t,l] = log pi_old(y_l | h, y_<l)
       dlogp_c[tau,t,l] = (l_skill - l_old) * m        for each routed component c in {ep, step}
   optionally z-normalized over the active tokens (population std, as the reference) and clipped to
   [-clip, clip] (both off by default).
   l_old is the batch's sampling log-prob (the learner's PPO uses the same), or with `rescore_old`
   the old policy's re-scoring of the plain prompt, batched into the teacher's pass.
5. Fused advantage, used unchanged by the clipped PPO loss of the learner:
       A_OPID           = A_ep + w_ep * dlogp_ep + w_step * dlogp_step      (w = 1e-3 each)
   The teacher term is on for start_update <= update < stop_update; a trajectory whose analysis
   failed keeps A_ep alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from opid_train.algorithms.base import Algorithm, PrepareContext
from opid_train.algorithms.grpo import GRPO, masked_mean
from opid_train.analyzers import Analysis, Analyzer, make_analyzer
from opid_train.types import Batch
from wrappers.skills import ROUTING_MODES, route_skills

COMPONENTS = ("episode", "step")


# -- steps 2-3: skills per row --------------------------------------------------------------------

def routed_skills(batch: Batch, analyses: list[Analysis | None], mode: str) -> list[dict[str, str]]:
    """For each row, {component: skill text} of the teacher prompts that score it ({} = no teacher)."""
    out = []
    for traj, t in batch.rows:
        analysis = analyses[traj]
        step = batch.trajectories[traj].steps[t].t
        out.append({} if analysis is None else route_skills(mode, step, analysis.episode_skill, analysis.step_skills))
    return out


# -- step 4: the self-teacher -------------------------------------------------------------------

def score_prompts(policy, prompt_ids: list[list[int]], response_ids: torch.Tensor, response_mask: torch.Tensor,
                  chunk_rows: int | None = None) -> torch.Tensor:
    """policy.score over many (prompt, response) pairs, each distinct pair once (a group often
    repeats its first prompt and response); one call, or length-sorted chunks of `chunk_rows`
    (less padding, bounded memory). Rows come back in the order given."""
    keys = [(tuple(p), tuple(r[m > 0].tolist())) for p, r, m in zip(prompt_ids, response_ids, response_mask)]
    slot: dict[tuple, int] = {}
    first: list[int] = []  # the first row of every distinct pair
    for i, key in enumerate(keys):
        if key not in slot:
            slot[key] = len(first)
            first.append(i)
    which = torch.tensor([slot[k] for k in keys], dtype=torch.long)
    order = sorted(first, key=lambda i: len(prompt_ids[i]))
    size = chunk_rows or len(order)
    scored = torch.zeros((len(order), response_ids.shape[1]), dtype=torch.float32)
    for start in range(0, len(order), size):
        rows = order[start:start + size]
        idx = torch.tensor(rows, dtype=torch.long)
        logp = policy.score([prompt_ids[i] for i in rows], response_ids[idx], response_mask[idx])
        scored[which[idx]] = logp.detach().float().cpu()
    return scored[which]


def score_teacher(batch: Batch, ctx: PrepareContext, prompts: list[tuple[int, str, str]],
                  chunk_rows: int | None = None, rescore_old: bool = False) -> dict[str, torch.Tensor]:
    """Teacher log-probs per component: {c: [R, T]} (0 where a row has no such teacher prompt).

    `prompts` holds (row, component, prompt text); they are scored together (see `score_prompts`).
    With `rescore_old` the plain prompts of those rows join the same pass and come back as
    component "old": the old policy's own re-scoring, so that l_skill - l_old compares two
    forwards of the same kind (sampling log-probs of a bf16 GPU run can differ from them).
    """
    teacher = {c: torch.zeros_like(batch.old_logp) for c in {c for _, c, _ in prompts}}
    if not prompts:
        return teacher
    items = [(row, c, ctx.policy.encode_prompt(text)) for row, c, text in prompts]
    if rescore_old:
        teacher["old"] = batch.old_logp.clone()
        items += [(row, "old", batch.prompt_ids[row]) for row in sorted({row for row, _, _ in prompts})]
    rows = torch.tensor([row for row, _, _ in items], dtype=torch.long)
    logp = score_prompts(ctx.policy, [ids for _, _, ids in items], batch.response_ids[rows],
                         batch.response_mask[rows], chunk_rows).to(batch.old_logp)
    for i, (row, component, _) in enumerate(items):
        teacher[component][row] = logp[i]
    return teacher


def skill_prompts(batch: Batch, ctx: PrepareContext, routed: list[dict[str, str]]) -> list[tuple[int, str, str]]:
    """(row, component, prompt) for every routed skill: the step's prompt with that one skill injected."""
    prompts = []
    for row, skills in enumerate(routed):
        context = batch.step(row).context
        for component, skill in skills.items():
            kwargs = {"episode_skill": skill} if component == "episode" else {"step_skill": skill}
            prompts.append((row, component, ctx.template.render(context, **kwargs)))
    return prompts


def shape_teacher_term(dlogp: torch.Tensor, active: torch.Tensor, normalize: bool, clip: float | None,
                       eps: float = 1e-6) -> torch.Tensor:
    """Optional z-normalization over the active tokens, then clipping; inactive tokens stay 0.

    As the reference: population std (n in the denominator); when that std is at most eps (one
    token, or all equal) the term is only centred."""
    if normalize and active.sum() > 0:
        values = dlogp[active > 0]
        std = values.std(unbiased=False)
        dlogp = (dlogp - values.mean()) / (std + eps) if std > eps else dlogp - values.mean()
    if clip is not None:
        dlogp = dlogp.clamp(-clip, clip)
    return dlogp * active


def opid_advantages(a_ep: torch.Tensor, dlogp: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """A_OPID = A_ep + sum_c w_c * dlogp_c."""
    a = a_ep.clone()
    for component, d in dlogp.items():
        a = a + weights[component] * d
    return a


# -- metrics and the per-step skill dump ----------------------------------------------------------

def component_metrics(parts: dict[str, torch.Tensor], mask: torch.Tensor, prefix: str) -> dict[str, float]:
    """Mean, abs-mean and share (of the summed abs-means) of each advantage component."""
    abs_means = {name: masked_mean(p.abs(), mask).item() for name, p in parts.items()}
    total = sum(abs_means.values()) or 1.0
    out = {}
    for name, p in parts.items():
        out[f"{prefix}/{name}_mean"] = masked_mean(p, mask).item()
        out[f"{prefix}/{name}_abs_mean"] = abs_means[name]
        out[f"{prefix}/{name}_share"] = abs_means[name] / total
    return out


def analysis_metrics(batch: Batch, analyses: list[Analysis | None], routed: list[dict[str, str]], prefix: str) -> dict[str, float]:
    analysed_rows = [i for i, (traj, _) in enumerate(batch.rows) if analyses[traj] is not None]
    critical = sum(batch.step(i).t in analyses[batch.rows[i][0]].step_skills for i in analysed_rows)
    return {
        f"{prefix}/analysed_trajectories": float(sum(a is not None for a in analyses)),
        f"{prefix}/failed_trajectories": float(sum(a is None for a in analyses)),
        f"{prefix}/critical_step_ratio": critical / max(len(analysed_rows), 1),
        f"{prefix}/skills_applied_episode": float(sum("episode" in r for r in routed)),
        f"{prefix}/skills_applied_step": float(sum("step" in r for r in routed)),
    }


def dump_skills(path: Path, update: int, batch: Batch, analyses: list[Analysis | None], routed: list[dict[str, str]],
                teacher_terms: dict[str, torch.Tensor] | None = None, tokenizer=None) -> None:
    """One JSON line per step of the batch: which skills its teacher prompts carried and, given
    `teacher_terms` (raw logp_skill - logp_old per token), what each skill said of each response token:
    the data for asking which tokens the self-teacher pushes (`scripts/teacher_tokens.py`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for row, (traj_index, _) in enumerate(batch.rows):
            traj, step, analysis = batch.trajectories[traj_index], batch.step(row), analyses[traj_index]
            line = {
                "update": update, "group_id": traj.group_id, "traj_id": traj.traj_id, "task_id": traj.task_id,
                "task": traj.task, "won": traj.won, "step": step.t, "analysed": analysis is not None,
                "critical": analysis is not None and step.t in analysis.step_skills,
                "episode_skill": routed[row].get("episode"), "step_skill": routed[row].get("step"),
            }
            if teacher_terms is not None:
                n = int(batch.response_mask[row].sum())
                ids = batch.response_ids[row, :n].tolist()
                line["tokens"] = tokenizer.convert_ids_to_tokens(ids) if tokenizer is not None else ids
                line["teacher_logp_diff"] = {c: [round(v, 4) for v in terms[row, :n].tolist()]
                                             for c, terms in teacher_terms.items() if c in routed[row]}
            f.write(json.dumps(line, ensure_ascii=False) + "\n")


def forget_updates_from(path: Path, update: int) -> None:
    """Drop dumped lines of updates >= `update` (written before a crash, redone after the resume)."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if line.strip() and json.loads(line).get("update", -1) < update]
    if len(kept) != len(lines):
        path.write_text("".join(kept), encoding="utf-8")


# -- the algorithm --------------------------------------------------------------------------------

class SkillTeacher:
    """Analyzer + routing shared by OPID and SDAR; the analyzer is built on first use (it may be the policy)."""

    def __init__(self, analyzer_config, routing: str):
        if routing not in ROUTING_MODES:
            raise ValueError(f"unknown routing mode {routing!r}; choose one of {ROUTING_MODES}")
        self.analyzer_config = analyzer_config
        self.routing = routing
        self.analyzer: Analyzer | None = None
        self.started = False

    def skills(self, batch: Batch, ctx: PrepareContext) -> tuple[list[Analysis | None], list[dict[str, str]]]:
        if self.analyzer is None:
            self.analyzer = make_analyzer(self.analyzer_config, policy=ctx.policy)
        if not self.started:  # a resumed run redoes the updates after its checkpoint
            forget_updates_from(Path(ctx.run_dir) / "skills.jsonl", ctx.update)
            self.started = True
        analyses = self.analyzer.analyze_many(batch.trajectories)
        return analyses, routed_skills(batch, analyses, self.routing)


def schedule_active(update: int, start: int, stop: int | None) -> bool:
    return update >= start and (stop is None or update < stop)


class OPID(Algorithm):
    name = "opid"

    def __init__(self, config):
        self.cfg = config.opid
        self.grpo = GRPO(config)
        self.teacher = SkillTeacher(config.analyzer, self.cfg.routing)

    def prepare(self, batch: Batch, ctx: PrepareContext) -> dict[str, Any]:
        # 1. A_ep: GRPO's group-relative outcome advantage (format penalty included)
        metrics = self.grpo.prepare(batch, ctx)
        a_ep = batch.advantages
        mask = batch.response_mask
        zero = torch.zeros_like(a_ep)
        dlogp = {c: zero for c in COMPONENTS}
        raw_terms = {}
        active = {c: zero for c in COMPONENTS}
        if schedule_active(ctx.update, self.cfg.start_update, self.cfg.stop_update):
            # 2-3. hindsight skills, routed per step
            analyses, routed = self.teacher.skills(batch, ctx)
            # 4. batched re-scoring of every skill-augmented prompt with the old policy
            teacher = score_teacher(batch, ctx, skill_prompts(batch, ctx, routed), self.cfg.score_chunk_rows,
                                    self.cfg.rescore_old)
            l_old = teacher.get("old", batch.old_logp)
            for c in COMPONENTS:
                rows = torch.tensor([c in r for r in routed], dtype=mask.dtype)
                active[c] = rows[:, None] * mask
                if c in teacher:
                    raw = raw_terms[c] = (teacher[c] - l_old) * active[c]
                    metrics[f"opid/dlogp_{c}_raw_mean"] = masked_mean(raw, active[c]).item() if active[c].any() else 0.0
                    dlogp[c] = shape_teacher_term(raw, active[c], self.cfg.normalize_teacher, self.cfg.clip_teacher)
            metrics.update(analysis_metrics(batch, analyses, routed, "opid"))
            ctx.details.update(analyses=analyses, routed=routed, teacher_terms=raw_terms)
            dump_skills(Path(ctx.run_dir) / "skills.jsonl", ctx.update, batch, analyses, routed, raw_terms,
                        getattr(ctx.policy, "tokenizer", None))
        # 5. A_OPID = A_ep + w_ep * dlogp_ep + w_step * dlogp_step
        weights = {"episode": self.cfg.w_ep, "step": self.cfg.w_step}
        batch.advantages = opid_advantages(a_ep, dlogp, weights)
        metrics.update(component_metrics(
            {"adv_ep": a_ep, "adv_skill_episode": weights["episode"] * dlogp["episode"],
             "adv_skill_step": weights["step"] * dlogp["step"]}, mask, "opid"))
        any_teacher = ((active["episode"] + active["step"]) > 0).to(mask.dtype)
        metrics["opid/teacher_active_token_ratio"] = (any_teacher.sum() / mask.sum().clamp(min=1)).item()
        return metrics
