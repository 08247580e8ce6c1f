"""opid-play: play any registered text environment in a terminal, or watch an agent play it.

    opid-play alfworld                                  # you play: OPID/ALFWorld-v0
    opid-play OPID/WebShop-v0 --split test --task-id 3
    opid-play searchqa --agent expert --episodes 3      # watch the expert (or --agent random)
    opid-play mypkg.envs:MyNS/Foo-v0                    # a user env, imported from the working directory

Each turn shows the observation and the numbered admissible actions. Type a number, or any
action as text; `help`, `history` and `quit` are commands of the player, not actions.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sys
import textwrap

import gymnasium as gym

from opid_envs import OPID_ENV_IDS
from opid_envs.core import MissingDependencyError, resolve_env_id

SHORT_NAMES = {env_id.split("/")[1].split("-")[0].lower(): env_id for env_id in OPID_ENV_IDS}
FREE_TEXT_HINTS = {
    "OPID/SearchQA-v0": "type <search> a query </search> to search, or <answer> your answer </answer> to answer",
}

PLACEHOLDER = re.compile(r"<([a-z][a-z ]*)>")
HELP = """\
Commands:
  NUMBER      take the numbered action from the list (you are asked to fill in a <placeholder>)
  any text    take that text as the action (the environment says if it cannot carry it out)
  history     the steps of this episode so far
  help        this help
  quit        stop playing (also Ctrl-D)
To send the word 'help', 'history' or 'quit' to the environment itself, type it with a leading '!'."""


def env_id_from_name(name: str) -> str:
    """A short name ('alfworld'), an id, or 'module:Id' (imported from the working directory)."""
    return resolve_env_id(SHORT_NAMES.get(name.lower(), name))


def columns(actions: list[str], width: int) -> str:
    """Numbered actions laid out in as many columns as the terminal holds."""
    cells = [f"{i:>3}. {a}" for i, a in enumerate(actions, 1)]
    cell_width = max(len(c) for c in cells) + 2
    per_row = max(1, min(4, width // cell_width))
    rows = (len(cells) + per_row - 1) // per_row
    lines = []
    for r in range(rows):
        row = [cells[c * rows + r] for c in range(per_row) if c * rows + r < len(cells)]
        lines.append("".join(cell.ljust(cell_width) for cell in row).rstrip())
    return "\n".join(lines)


class Terminal:
    """What a person sees: wrapped text on stdout, lines read from stdin."""

    def __init__(self, out=None):
        self.out = out or sys.stdout  # looked up now, so a redirected stdout is honoured
        self.width = min(shutil.get_terminal_size((100, 24)).columns, 120)

    def say(self, text: str = "") -> None:
        for line in text.splitlines() or [""]:
            self.out.write((textwrap.fill(line, self.width, replace_whitespace=False) if line else "") + "\n")
        self.out.flush()

    def ask(self, prompt: str) -> str | None:
        try:
            return input(prompt)
        except EOFError:
            self.say()
            return None


def show_turn(term: Terminal, env_id: str, observation: str, info: dict) -> None:
    term.say(observation.strip().replace(" [SEP] ", "\n"))  # WebShop's text mode, one field a line
    term.say()
    actions = info.get("admissible_actions")
    if actions:
        term.say("Actions:")
        term.say(columns(actions, term.width))
    else:
        term.say(f"Free-form action: {FREE_TEXT_HINTS.get(env_id, 'type the action as text')}.")


def choose(text: str, actions: list[str] | None) -> str:
    """The action a typed line stands for: a number picks from the list, '!word' sends the word."""
    text = text.strip()
    if text.startswith("!"):
        return text[1:]
    if actions and text.isdigit() and 1 <= int(text) <= len(actions):
        return actions[int(text) - 1]
    return text


def read_action(term: Terminal, prompt: str, history: list[tuple[str, str]], actions: list[str] | None) -> str | None:
    """Read lines until one is an action (player commands are answered in between); None to quit."""
    while True:
        line = term.ask(prompt)
        command = "quit" if line is None else line.strip().lower()
        if command in {"quit", "exit"}:
            return None
        if command == "help":
            term.say(HELP)
        elif command == "history":
            term.say("\n".join(f"{i}. {a}\n   -> {o.strip()}" for i, (a, o) in enumerate(history, 1))
                     or "No steps yet.")
        elif command:
            action = choose(line, actions)
            picked = action != line.strip() and not line.strip().startswith("!")
            for placeholder in PLACEHOLDER.findall(action) if picked else ():  # WebShop's search[<your query>]
                value = term.ask(f"{placeholder}: ")
                if value is None:
                    return None
                action = action.replace(f"<{placeholder}>", value.strip(), 1)
            if action != line.strip():
                term.say(f"> {action}")
            return action


def play_episode(env: gym.Env, env_id: str, term: Terminal, agent: str, rng: random.Random,
                 reset_options: dict, seed: int | None) -> dict | None:
    """One episode; returns its outcome, or None when the person quit."""
    observation, info = env.reset(seed=seed, options=reset_options)
    term.say(f"=== {env_id} · split {info['split']} · task {info['task_id']} ({info['task_type']}) ===")
    term.say(f"Task: {info['task']}")
    term.say()
    history: list[tuple[str, str]] = []
    reward, terminated, truncated = 0.0, False, False
    if agent == "human":
        term.say("Type a number or an action; 'help' for commands.")
    while not (terminated or truncated):
        show_turn(term, env_id, observation, info)
        step = len(history) + 1
        if agent == "human":
            action = read_action(term, f"[step {step}/{env.unwrapped.max_steps}] > ", history,
                                 info.get("admissible_actions"))
            if action is None:
                return None
        else:
            action = env.unwrapped.expert_action() if agent == "expert" else env.unwrapped.random_action(rng)
            term.say(f"[step {step}] {agent} > {action}")
        observation, reward, terminated, truncated, info = env.step(action)
        history.append((action, observation))
        term.say()
    term.say(observation.strip())
    ending = "you won" if info["won"] else "not won"
    if agent != "human":
        ending = f"the {agent} agent {'won' if info['won'] else 'did not win'}"
    why = "" if terminated else f" (step limit of {env.unwrapped.max_steps} reached)"
    term.say(f"=== Episode over: {ending}{why} · reward {float(reward):.2f} · {len(history)} steps ===")
    term.say()
    return {"won": bool(info["won"]), "reward": float(reward), "steps": len(history)}


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written; every option's help ends with its default."""


class OneLineErrors(argparse.ArgumentParser):
    """An error is one line (option, value, what is allowed), exit status 2, without the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = OneLineErrors(prog="opid-play", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("env", help=f"env id, 'module:Id', or one of {sorted(SHORT_NAMES)}")
    parser.add_argument("--agent", choices=["human", "random", "expert"], default="human",
                        help="who plays: you (human), or watch the random or the expert agent")
    parser.add_argument("--episodes", type=int, default=None,
                        help="episodes to play (None: you, until you quit; an agent, 1)")
    parser.add_argument("--split", default=None, help="task split (None: the env's first)")
    parser.add_argument("--task-id", type=int, default=None, help="task to play (None: drawn from --seed)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the task draw and the random agent")
    parser.add_argument("--max-steps", type=int, default=None, help="step limit (None: the env's)")
    parser.add_argument("--env-kwargs", default="{}", help='JSON keyword arguments of gym.make, e.g. \'{"level": "easy"}\'')
    args = parser.parse_args(argv)
    # every option checked before any env is built
    for option, value, lowest in (("--episodes", args.episodes, 1), ("--seed", args.seed, 0),
                                  ("--max-steps", args.max_steps, 1), ("--task-id", args.task_id, 0)):
        if value is not None and value < lowest:
            parser.error(f"{option} {value}: expected an integer >= {lowest}")
    try:
        env_kwargs = json.loads(args.env_kwargs)
        if not isinstance(env_kwargs, dict):
            raise ValueError("expected a JSON object")
    except ValueError as exc:
        parser.error(f"--env-kwargs {args.env_kwargs!r}: {exc}")
    if args.max_steps is not None:
        env_kwargs["max_steps"] = args.max_steps
    try:
        env_id = env_id_from_name(args.env)
    except (ValueError, ModuleNotFoundError) as exc:
        parser.error(f"env {args.env!r}: {exc}; expected a registered id, 'module:Id' or one of {sorted(SHORT_NAMES)}")
    term = Terminal()
    try:
        if args.agent == "human":
            import readline  # noqa: F401  (line editing and arrow-key recall in input())
        term.say(f"Loading {env_id} ...")
        env = gym.make(env_id, **env_kwargs)
    except (MissingDependencyError, ValueError, ModuleNotFoundError, gym.error.Error) as exc:
        print(f"opid-play: {exc}", file=sys.stderr)
        return 2
    if args.agent == "expert" and not hasattr(env.unwrapped, "expert_action"):
        print(f"opid-play: {env_id} has no expert (env.unwrapped.expert_action)", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    options = {k: v for k, v in (("split", args.split), ("task_id", args.task_id)) if v is not None}
    episodes = args.episodes if args.episodes is not None else (None if args.agent == "human" else 1)
    results, episode = [], 0
    try:
        while episodes is None or episode < episodes:
            outcome = play_episode(env, env_id, term, args.agent, rng, options, seed=args.seed + episode)
            if outcome is None:
                break
            results.append(outcome)
            episode += 1
            if args.agent == "human" and (episodes is None or episode < episodes):
                line = term.ask("Press Enter for another task, or type q to quit: ")
                if line is None or line.strip().lower() in {"q", "quit", "exit"}:
                    break
                options.pop("task_id", None)  # a fresh task, drawn from the next seed
    except KeyboardInterrupt:
        term.say()
    except ValueError as exc:  # a split or task id the env does not have
        print(f"opid-play: {exc}", file=sys.stderr)
        return 2
    finally:
        env.close()
    if results:
        won = sum(r["won"] for r in results)
        term.say(f"Played {len(results)} episode(s): won {won}, mean reward "
                 f"{sum(r['reward'] for r in results) / len(results):.2f}, mean steps "
                 f"{sum(r['steps'] for r in results) / len(results):.1f}.")
    term.say("Bye.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
