"""Which response tokens does OPID's self-teacher push, and which way? A summary of a run's skills.jsonl.

Each line of an OPID run's `skills.jsonl` holds a step's response tokens and, for each skill routed
to it, the raw teacher term logp_skill - logp_old of every token. This prints, over the chosen
updates, how that term's mass (sum of |term|) splits by the token's place in the response, by the
trajectory's outcome and by the kind of skill, how concentrated it is (the share carried by the
largest 1 % and 10 % of tokens), and the tokens with the most mass. `--centre` first z-normalizes
the terms per update and skill component, as `--opid.normalize-teacher` does before weighting them.

    python scripts/teacher_tokens.py runs/replicate/seed1/opid_centred_teacher_weight_0.1/skills.jsonl --centre
    python scripts/teacher_tokens.py <run>/skills.jsonl --updates 0-7 --top 15
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path


def skill_kind(component: str, skill: str) -> str:
    """"step: Do", "step: Avoid", "episode: workflow" or "episode: avoid", from the offline analyzer's wording."""
    if component == "step":
        return "step: Avoid" if skill.startswith("Avoid") else "step: Do" if skill.startswith("Do") else "step: other"
    return "episode: avoid" if ", avoid these mistakes:" in skill else "episode: workflow"


def token_place(i: int, n: int) -> str:
    return "last (end of action)" if i == n - 1 else "first" if i == 0 else "middle"


def read_terms(path: Path, updates: range | None) -> list[dict]:
    """One record per (step, skill, token): the raw term and what it is grouped by."""
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"{path}:{number}: not a JSON line ({exc.msg})") from None
        if "teacher_logp_diff" not in row:
            raise SystemExit(f"{path}:{number}: no per-token teacher terms (a run from before they were dumped)")
        if updates is not None and row["update"] not in updates:
            continue
        for component, terms in row["teacher_logp_diff"].items():
            kind = skill_kind(component, row[f"{component}_skill"] or "")
            for i, (token, term) in enumerate(zip(row["tokens"], terms)):
                records.append({"term": term, "token": str(token), "place": token_place(i, len(terms)),
                                "outcome": "won" if row["won"] else "lost", "kind": kind,
                                "update": row["update"], "component": component})
    return records


def centre(records: list[dict]) -> list[dict]:
    """Each term z-normalized over its update's tokens of the same component (OPID's normalize_teacher)."""
    groups = defaultdict(list)
    for r in records:
        groups[r["update"], r["component"]].append(r["term"])
    stats = {k: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0) for k, v in groups.items()}
    out = []
    for r in records:
        mean, sd = stats[r["update"], r["component"]]
        out.append({**r, "term": (r["term"] - mean) / (sd + 1e-6) if len(groups[r["update"], r["component"]]) > 1
                    else r["term"]})
    return out


def mass_table(records: list[dict], key: str) -> list[str]:
    total = sum(abs(r["term"]) for r in records) or 1.0
    groups = defaultdict(list)
    for r in records:
        groups[r[key]].append(r["term"])
    lines = [f"| {key} | tokens | share of mass | mean term | mean abs term |", "|---|---|---|---|---|"]
    for name, terms in sorted(groups.items(), key=lambda kv: -sum(map(abs, kv[1]))):
        lines.append(f"| {name} | {len(terms)} | {100 * sum(map(abs, terms)) / total:.1f} % | "
                     f"{statistics.mean(terms):+.3f} | {statistics.mean(map(abs, terms)):.3f} |")
    return lines + [""]


def summary(records: list[dict], top: int) -> str:
    if not records:
        return "no teacher terms in the chosen updates"
    sizes = sorted((abs(r["term"]) for r in records), reverse=True)
    total = sum(sizes) or 1.0
    share = {q: 100 * sum(sizes[: max(1, round(q * len(sizes)))]) / total for q in (0.01, 0.1)}
    terms = [r["term"] for r in records]
    lines = [f"{len(records)} token terms: mean {statistics.mean(terms):+.3f}, mean abs {total / len(sizes):.3f} nats; "
             f"the largest 1 % of tokens carry {share[0.01]:.1f} % of the mass, the largest 10 % {share[0.1]:.1f} %.", ""]
    for key in ("place", "outcome", "kind"):
        lines += mass_table(records, key)
    by_token = defaultdict(list)
    for r in records:
        by_token[r["token"]].append(r["term"])
    lines += [f"Top {top} tokens by mass:", "", "| token | count | share of mass | mean term |", "|---|---|---|---|"]
    for token, ts in sorted(by_token.items(), key=lambda kv: -sum(map(abs, kv[1])))[:top]:
        lines.append(f"| {token!r} | {len(ts)} | {100 * sum(map(abs, ts)) / total:.1f} % | {statistics.mean(ts):+.3f} |")
    return "\n".join(lines)


def parse_updates(text: str | None) -> range | None:
    if not text:
        return None
    first, _, last = text.partition("-")
    return range(int(first), int(last or first) + 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("skills", type=Path, help="an OPID run's skills.jsonl")
    parser.add_argument("--updates", help="e.g. 0-7 (None: all)")
    parser.add_argument("--top", type=int, default=10, help="tokens listed by teacher-term mass")
    parser.add_argument("--centre", action="store_true", help="z-normalize per update and component first")
    args = parser.parse_args()
    records = read_terms(args.skills, parse_updates(args.updates))
    print(summary(centre(records) if args.centre else records, args.top))


if __name__ == "__main__":
    main()
