"""Offline ALFWorld game suites, built from the ALFRED scene tables that ship inside `alfworld`.

The official games cannot be downloaded here (and often not elsewhere), so we write our own
`game.tw-pddl` files in the official `json_2.1.1/{train,valid_seen,valid_unseen}` layout:

- rooms: the receptacle instances of each real ALFRED floor plan (`FloorPlan*-openable.json`,
  plus one instance of each static receptacle type the plan lists but that table omits);
- objects: the object classes of the plan, placed in receptacles that can hold them
  (`constants.VAL_RECEPTACLE_OBJECTS`), so only plausible target/receptacle pairs exist;
- goals: the goal PDDL and sentence templates of `goal_library`, with the same naming scheme
  (`Apple|+00.12|...` mangled to `Apple_bar__plus_00_dot_12...`) as ALFRED's own problems;
- splits: train and valid_seen from ALFRED's train scenes (disjoint games), valid_unseen from
  ALFRED's test scenes, so "unseen" means unseen rooms, as in ALFWorld.

Each game is drawn from its own seeded RNG (suite seed, split, index), so a suite is
byte-identical for the same seed whatever order or subset is written. A suite is written into a
temporary directory and renamed into place, so a killed run never leaves a half suite behind.
The writer holds a lock on `<tmp>.lock` (made before the folder) while it writes: the next
generation or `ensure_suite` removes the temporary folders whose lock is free (their writer was
killed), never one still being written (`clean_stale_temp`).

The planner's plan (`walkthrough`) costs 0.5-30 s per game here (most in ALFRED's large
kitchens), hours for the thousands of games a first `gym.make` writes in ~20 s, so lazy
generation does not plan. It copies plans shipped with the package (`walkthroughs_<level>.json`,
keyed by a hash of the problem: the default easy suite's, planned once) and otherwise stores
none; `--walkthroughs` adds them to a suite in a resumable pass (one atomic file write per game,
`--workers` processes), and `ALFWorldEnv.walkthrough()` plans one game on demand. The
handcoded expert (`experts.py`) needs no stored plan.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

GENERATOR_VERSION = 1
SPLITS = ("train", "valid_seen", "valid_unseen")
TASK_TYPES = (
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
)
# Receptacles a lamp stands on: lamps are in no compatibility list (ALFRED never moves them), and
# the look_at goal needs the lamp in a receptacle, so a floor lamp stands by one of these too.
LAMP_HOLDERS = ("SideTable", "Desk", "Dresser", "DiningTable", "CoffeeTable", "Shelf")
LAMPS = ("DeskLamp", "FloorLamp")
# The appliance each state-change task needs, which is never its target receptacle.
APPLIANCE = {
    "pick_clean_then_place_in_recep": ("SinkBasin", "Cleanable"),
    "pick_heat_then_place_in_recep": ("Microwave", "Heatable"),
    "pick_cool_then_place_in_recep": ("Fridge", "Coolable"),
}
STATE_PREDICATE = {"Cleanable": "cleanable", "Heatable": "heatable", "Coolable": "coolable"}


@dataclass(frozen=True)
class Level:
    """A named difficulty: which task types, which receptacles per room, how many games."""

    name: str
    task_types: tuple[str, ...]
    rooms: str  # "all": every receptacle of the floor plan; "one_per_type"; "easy6"
    sizes: dict = field(default_factory=dict)
    max_object_types: int | None = None  # cap on distinct object classes in a room
    # Draw game i of a split as this level does (default: its own name): a level that only adds
    # games then shares its evaluation games, and its first training games, with that level.
    draws_as: str | None = None


EASY_RECEPTACLES = ("CounterTop", "Cabinet", "Fridge", "SinkBasin", "Microwave", "SideTable")
LEVELS = {
    # Calibrated for tiny CPU policies (reference notes): ALFRED kitchens cut down to one countertop,
    # cabinet, fridge, sinkbasin and microwave plus a sidetable with a desk lamp; up to 7 object
    # classes drawn from all ALFRED kitchens; 2 short task types.
    "easy": Level("easy", ("pick_and_place_simple", "look_at_obj_in_light"), "easy6",
                  {"train": 300, "valid_seen": 60, "valid_unseen": 60}, max_object_types=7),
    # The easy games plus 600 more training games, so that RL can train on tasks the warm start did
    # not demonstrate (the main job: 300 demonstrations, RL on the other 600), and 140 more evaluation
    # games per split (the first 60 are easy's): with the task as the unit, 60 + 60 tasks can only
    # tell a gain of about 10 points from noise, 200 + 200 one of about 5 (the main job's calibration).
    "easy-large": Level("easy-large", ("pick_and_place_simple", "look_at_obj_in_light"), "easy6",
                        {"train": 900, "valid_seen": 200, "valid_unseen": 200}, max_object_types=7, draws_as="easy"),
    # All six task types in real floor plans, one receptacle per type (about 8-12 per room).
    "medium": Level("medium", TASK_TYPES, "one_per_type",
                    {"train": 1000, "valid_seen": 100, "valid_unseen": 100}),
    # The ALFWorld distribution: every receptacle of the floor plan, ALFWorld's suite sizes.
    "full": Level("full", TASK_TYPES, "all", {"train": 3553, "valid_seen": 140, "valid_unseen": 134}),
}


# -- the tables shipped inside alfworld ---------------------------------------------------------
class SceneTables:
    """ALFRED's scene tables, compatibility tables, goal library, PDDL domain and grammar."""

    def __init__(self):
        from opid_envs.alfworld import import_alfworld

        import_alfworld()
        import alfworld.gen.constants as constants
        import alfworld.gen.goal_library as goal_library
        import alfworld.info as info

        self.constants = constants
        self.goals = goal_library.gdict
        self.layouts = Path(constants.__file__).parent / "layouts"
        self.domain = Path(info.ALFRED_PDDL_PATH).read_text()
        self.grammar = Path(info.ALFRED_TWL2_PATH).read_text()
        self.static_receptacles = sorted(constants.RECEPTACLES - set(constants.MOVABLE_RECEPTACLES))
        self.object_types = sorted(constants.OBJECTS_SET - set(self.static_receptacles))
        self.can_contain = {r: set(objs) for r, objs in constants.VAL_RECEPTACLE_OBJECTS.items()
                            if r in self.static_receptacles}
        self.actions = constants.VAL_ACTION_OBJECTS
        self.train_scenes = list(constants.TRAIN_SCENE_NUMBERS)
        self.test_scenes = list(constants.TEST_SCENE_NUMBERS)
        self._scenes: dict[int, tuple[dict, list]] = {}

    def room_type(self, scene: int) -> str:
        return next(name for name, nums in self.constants.SCENE_TYPE.items() if scene in nums)

    def scene(self, scene: int) -> tuple[dict[str, list[float]], list[str]]:
        """(receptacle instance id -> interaction pose, object classes) of a floor plan."""
        if scene not in self._scenes:
            poses = json.loads((self.layouts / f"FloorPlan{scene}-openable.json").read_text())
            classes = json.loads((self.layouts / f"FloorPlan{scene}-objects.json").read_text())
            self._scenes[scene] = (poses, classes)
        return self._scenes[scene]


def receptacle_class(instance_id: str) -> str:
    """'Sink|-01.90|+00.97|-01.50|SinkBasin' -> 'SinkBasin'; 'Cabinet|+00.68|...' -> 'Cabinet'."""
    parts = instance_id.split("|")
    return parts[-1] if len(parts) > 4 else parts[0]


def mangle(name: str) -> str:
    """ALFRED's PDDL-safe spelling of an instance id (what the engine's demangler expects)."""
    for char, word in (("-", "_minus_"), ("|", "_bar_"), ("+", "_plus_"), (".", "_dot_"), (",", "_comma_")):
        name = name.replace(char, word)
    return name


def _coord(rng: random.Random) -> str:
    return f"{rng.uniform(-3.5, 3.5):+06.2f}"


def _receptacle_id(cls: str, rng: random.Random) -> str:
    """A new instance id; basins are named after their sink/bathtub, as in ALFRED's tables."""
    xyz = f"{_coord(rng)}|{_coord(rng)}|{_coord(rng)}"
    return f"{cls[:-len('Basin')]}|{xyz}|{cls}" if cls.endswith("Basin") else f"{cls}|{xyz}"


# -- one game ---------------------------------------------------------------------------------
@dataclass
class Game:
    """One generated task in one room, before it is written as PDDL."""

    scene: int
    task_type: str
    object_target: str
    parent_target: str
    toggle_target: str
    receptacles: dict[str, tuple[str, tuple[int, int, int, int]]]  # id -> (class, location)
    objects: dict[str, tuple[str, str]]  # id -> (class, receptacle id)
    agent_location: tuple[int, int, int, int]
    description: str


class GameSampler:
    """Draws valid, solvable games for a level from the scene tables."""

    def __init__(self, tables: SceneTables, level: Level):
        self.t, self.level = tables, level

    # rooms
    def room(self, scene: int, rng: random.Random) -> dict[str, tuple[str, tuple]]:
        poses, classes = self.t.scene(scene)
        ids = sorted(poses)
        if self.level.rooms == "easy6":
            wanted = EASY_RECEPTACLES
            ids = [next((i for i in ids if receptacle_class(i) == cls), None) for cls in wanted]
            ids = [i or _receptacle_id(cls, rng) for i, cls in zip(ids, wanted)]
        else:
            if self.level.rooms == "one_per_type":
                first = {}
                for i in ids:
                    first.setdefault(receptacle_class(i), i)
                ids = sorted(first.values())
            present = {receptacle_class(i) for i in ids}
            for cls in sorted(set(classes) & set(self.t.static_receptacles) - present):
                count = 4 if cls == "StoveBurner" and self.level.rooms == "all" else 1
                ids += [_receptacle_id(cls, rng) for _ in range(count)]
        room, used = {}, set()
        for i in ids:
            pose = poses.get(i)
            if pose is None:
                loc = (rng.randint(-12, 12), rng.randint(-12, 12), rng.randint(0, 3), rng.choice((0, 30, 60)))
            else:
                loc = (round(pose[0] / 0.25), round(pose[1] / 0.25), int(pose[2]) // 90 % 4, int(pose[3]))
            while loc in used:  # one receptacle per location, so "next to it" lists stay right
                loc = (loc[0] + 1, *loc[1:])
            used.add(loc)
            room[i] = (receptacle_class(i), loc)
        return room

    def object_pool(self, scene: int, room: dict) -> list[str]:
        """Object classes of the floor plan that some receptacle of the room can hold."""
        _, classes = self.t.scene(scene)
        if self.level.rooms == "easy6":  # synthetic kitchen: every kitchen class may appear
            classes = sorted({c for s in self.t.constants.SCENE_TYPE["Kitchen"] for c in self.t.scene(s)[1]})
        room_classes = {cls for cls, _ in room.values()}
        return sorted(c for c in set(classes) if c in self.t.object_types and c not in LAMPS
                      and any(c in self.t.can_contain.get(r, ()) for r in room_classes))

    def lamp(self, scene: int, room: dict) -> tuple[str, list[str]]:
        """(lamp class, receptacles that can hold it) or ('', []) when the room has no lamp."""
        _, classes = self.t.scene(scene)
        lamp = "DeskLamp" if self.level.rooms == "easy6" else next((c for c in LAMPS if c in classes), "")
        holders = sorted(i for i, (cls, _) in room.items() if cls in LAMP_HOLDERS)
        return (lamp, holders) if lamp and holders else ("", [])

    # tasks
    def candidates(self, task_type: str, room: dict, pool: list[str], lamp: str) -> list[tuple[str, str]]:
        """Every plausible (object class, receptacle or toggle class) pair for the task type."""
        room_classes = sorted({cls for cls, _ in room.values()})
        if task_type == "look_at_obj_in_light":
            return [(o, lamp) for o in pool] if lamp else []
        need, action = APPLIANCE.get(task_type, (None, None))
        if need and need not in room_classes:
            return []
        pairs = []
        for obj in pool:
            if action and obj not in self.t.actions[action]:
                continue
            holders = [r for r in room_classes if obj in self.t.can_contain.get(r, ())]
            for parent in holders:
                # the object must start somewhere else, and a state task's appliance is no target
                if parent != need and any(h != parent for h in holders):
                    pairs.append((obj, parent))
        return pairs

    def sample(self, scene: int, task_type: str, rng: random.Random) -> Game | None:
        room = self.room(scene, rng)
        pool = self.object_pool(scene, room)
        lamp, lamp_holders = self.lamp(scene, room)
        pairs = self.candidates(task_type, room, pool, lamp)
        if not pairs:
            return None
        target, second = rng.choice(pairs)
        look = task_type == "look_at_obj_in_light"
        parent, toggle = ("", second) if look else (second, "")
        if self.level.max_object_types and len(pool) > self.level.max_object_types:
            others = rng.sample([c for c in pool if c != target], self.level.max_object_types - 1)
            pool = sorted(others + [target])
        objects, used_ids = {}, set()
        for cls in pool:
            if cls == target:
                low = 2 if task_type == "pick_two_obj_and_place" else 1
                count = rng.randint(low, 3)
            else:
                count = rng.randint(1, 2) if self.level.rooms != "easy6" else 1
            holders = sorted(i for i, (rc, _) in room.items() if cls in self.t.can_contain.get(rc, ()))
            if cls == target and parent:
                holders = [i for i in holders if room[i][0] != parent]
            for _ in range(count):
                oid = f"{cls}|{_coord(rng)}|{_coord(rng)}|{_coord(rng)}"
                while oid in used_ids:
                    oid = f"{cls}|{_coord(rng)}|{_coord(rng)}|{_coord(rng)}"
                used_ids.add(oid)
                objects[oid] = (cls, rng.choice(holders))
        if lamp:
            objects[f"{lamp}|{_coord(rng)}|{_coord(rng)}|{_coord(rng)}"] = (lamp, rng.choice(lamp_holders))
        used = {loc for _, loc in room.values()}
        agent = (rng.randint(-12, 12), rng.randint(-12, 12), rng.randint(0, 3), 30)
        while agent in used:
            agent = (agent[0] + 1, *agent[1:])
        template = rng.choice(self.t.goals[task_type]["templates"])
        description = template.format(obj=target.lower(), recep=parent.lower(), toggle=toggle.lower())
        return Game(scene, task_type, target, parent, toggle, room, objects, agent, description)


# -- writing a game -------------------------------------------------------------------------------
def _loc(loc: tuple) -> str:
    return mangle("loc|%d|%d|%d|%d" % loc)


def problem_pddl(game: Game, tables: SceneTables, name: str) -> str:
    """The PDDL problem of a game, in the shape of ALFRED's own problems."""
    t = tables
    recs = {mangle(i): (cls, _loc(loc)) for i, (cls, loc) in game.receptacles.items()}
    objs = {mangle(i): (cls, mangle(r)) for i, (cls, r) in game.objects.items()}
    locations = sorted({loc for _, loc in recs.values()} | {_loc(game.agent_location)})
    objects = (["agent1 - agent"]
               + [f"{c}Type - otype" for c in t.object_types]
               + [f"{c}Type - rtype" for c in t.static_receptacles]
               + [f"{o} - object" for o in sorted(objs)]
               + [f"{r} - receptacle" for r in sorted(recs)]
               + [f"{loc} - location" for loc in locations])
    init = [f"(atLocation agent1 {_loc(game.agent_location)})"]
    for r, (cls, loc) in sorted(recs.items()):
        init.append(f"(receptacleType {r} {cls}Type)")
        init.append(f"(receptacleAtLocation {r} {loc})")
        if cls in t.constants.OPENABLE_CLASS_SET:
            init.append(f"(openable {r})")
    for o, (cls, r) in sorted(objs.items()):
        init += [f"(objectType {o} {cls}Type)", f"(inReceptacle {o} {r})", f"(objectAtLocation {o} {recs[r][1]})"]
        if cls in LAMPS:
            init.append(f"(toggleable {o})")
            continue
        init.append(f"(pickupable {o})")
        for action, predicate in STATE_PREDICATE.items():
            if cls in t.actions[action]:
                init.append(f"({predicate} {o})")
    room_classes = sorted({cls for cls, _ in recs.values()})
    object_classes = sorted({cls for cls, _ in objs.values()})
    init += [f"(canContain {r}Type {o}Type)" for r in room_classes for o in object_classes
             if o in t.can_contain.get(r, ())]
    goal = t.goals[game.task_type]["pddl"].format(
        obj=game.object_target, recep=game.parent_target, toggle=game.toggle_target).replace("#", "-")
    return ("(define (problem %s)\n(:domain alfred)\n(:objects\n    %s\n)\n(:init\n    %s\n)\n%s\n"
            % (name, "\n    ".join(objects), "\n    ".join(init), goal.strip()))


def game_record(game: Game, tables: SceneTables, name: str) -> tuple[dict, dict]:
    """(game.tw-pddl content, traj_data.json content) of a game."""
    grammar = tables.grammar.replace("UNKNOWN GOAL", game.description)
    gamefile = {
        "pddl_domain": tables.domain,
        "grammar": grammar,
        "pddl_problem": problem_pddl(game, tables, name),
        "solvable": True,
    }
    traj = {
        "task_type": game.task_type,
        "task_id": name,
        "scene": {"floor_plan": f"FloorPlan{game.scene}", "scene_num": game.scene},
        "pddl_params": {
            "object_target": game.object_target,
            "parent_target": game.parent_target,
            "toggle_target": game.toggle_target,
            "mrecep_target": "",
            "object_sliced": False,
        },
        "turk_annotations": {"anns": [{"task_desc": game.description}]},
        "generator": {"name": "opid", "version": GENERATOR_VERSION},
    }
    return gamefile, traj


# -- suites -----------------------------------------------------------------------------------------
def suite_root(level: str, seed: int = 0, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where a generated suite lives: $OPID_CACHE/alfworld/<level>[-seed<k>]."""
    base = Path(cache_dir or os.environ.get("OPID_CACHE") or Path.home() / ".cache" / "opid")
    return base / "alfworld" / (level if seed == 0 else f"{level}-seed{seed}")


LEGACY_TEMP_AGE_S = 600  # an unlocked leftover untouched this long is stale


def _idle_for(folder: Path, seconds: float) -> bool:
    """True when nothing under `folder` changed in the last `seconds` (stops at the first recent file)."""
    recent = time.time() - seconds
    for parent, _dirs, files in os.walk(folder):
        for name in (parent, *(os.path.join(parent, f) for f in files)):
            try:
                if os.lstat(name).st_mtime > recent:
                    return False
            except OSError:
                continue
    return True


def clean_stale_temp(root: str | os.PathLike) -> list[Path]:
    """Remove what killed writers of `root` left beside it; returns the folders removed.

    `.<name>.tmp-*` folders whose `.lock` no process holds (a writer holds it from before it makes
    the folder until the folder is renamed), and lockless ones (from before writers locked) and
    `.<name>.old-*` ones (a replaced suite on its way out) idle for LEGACY_TEMP_AGE_S.
    """
    root = Path(root)
    removed = []
    if not root.parent.is_dir():
        return removed
    for folder in sorted(root.parent.glob(f".{root.name}.old-*")):
        if _idle_for(folder, LEGACY_TEMP_AGE_S):  # not one a live writer is moving a suite into
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    for folder in sorted(root.parent.glob(f".{root.name}.tmp-*")):
        if not folder.is_dir():
            continue
        lock_path = folder.with_name(folder.name + ".lock")
        try:
            lock = open(lock_path, "r+")
        except FileNotFoundError:
            if _idle_for(folder, LEGACY_TEMP_AGE_S):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
            continue
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its writer is alive
            shutil.rmtree(folder, ignore_errors=True)
            lock_path.unlink(missing_ok=True)  # while holding it: a second cleaner finds nothing to do
            removed.append(folder)
    return removed


def _scenes(tables: SceneTables, split: str, task_type: str, level: Level) -> list[int]:
    scenes = tables.test_scenes if split == "valid_unseen" else tables.train_scenes
    if level.rooms == "easy6":
        return [s for s in scenes if tables.room_type(s) == "Kitchen"]
    valid_rooms = tables.constants.GOALS_VALID[task_type]
    return [s for s in scenes if tables.room_type(s) in valid_rooms]


def generate_suite(level: str | Level = "full", out_dir: str | os.PathLike | None = None, seed: int = 0,
                   sizes: dict | None = None, progress: bool = True) -> Path:
    """Write a suite to `out_dir` (default: the cache) atomically and return its root.

    `sizes` overrides the level's games per split (e.g. {"train": 12, ...} for tests).
    """
    from tqdm.auto import tqdm

    lv = LEVELS[level] if isinstance(level, str) else level
    sizes = {**lv.sizes, **(sizes or {})}
    root = Path(out_dir) if out_dir else suite_root(lv.name, seed)
    tables = SceneTables()
    sampler = GameSampler(tables, lv)

    root.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temp(root)
    # the lock exists (and is held) before the folder, so a cleaner never sees a live folder unlocked
    lock_fd, lock_path = tempfile.mkstemp(prefix=f".{root.name}.tmp-", suffix=".lock", dir=root.parent)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    tmp = Path(lock_path[: -len(".lock")])
    try:
        tmp.mkdir()
        shipped = shipped_walkthroughs(lv.name)
        seen_problems: set[str] = set()
        total, planned = sum(sizes[s] for s in SPLITS), 0
        bar = tqdm(total=total, desc=f"generating ALFWorld '{lv.name}' games", unit="game", disable=not progress)
        for split in SPLITS:
            for index in range(sizes[split]):
                rng = random.Random(f"opid-alfworld|{lv.draws_as or lv.name}|{seed}|{split}|{index}")
                task_type = lv.task_types[index % len(lv.task_types)]
                scenes = _scenes(tables, split, task_type, lv)
                for _attempt in range(1000):
                    game = sampler.sample(rng.choice(scenes), task_type, rng)
                    if game is None:
                        continue
                    name = f"{split}_{index:05d}"
                    gamefile, traj = game_record(game, tables, name)
                    key = gamefile["pddl_problem"].split("(:objects", 1)[1]
                    if key not in seen_problems:  # train and valid_seen share no game
                        break
                else:
                    raise RuntimeError(f"could not draw a new {task_type} game for {split}")
                seen_problems.add(key)
                plan = shipped.get(problem_key(gamefile["pddl_problem"]))
                if plan is not None:
                    gamefile["walkthrough"] = plan
                    planned += 1
                recep = game.toggle_target or game.parent_target
                trial = tmp / "json_2.1.1" / split / (
                    f"{task_type}-{game.object_target}-None-{recep}-{game.scene}") / f"trial_{index:05d}"
                trial.mkdir(parents=True)
                (trial / "game.tw-pddl").write_text(json.dumps(gamefile, indent=1))
                (trial / "traj_data.json").write_text(json.dumps(traj, indent=1))
                bar.update()
        bar.close()
        manifest = {"generator": "opid", "version": GENERATOR_VERSION, "level": lv.name, "seed": seed,
                    "sizes": {s: sizes[s] for s in SPLITS}, "walkthroughs": planned == total}
        (tmp / "opid_suite.json").write_text(json.dumps(manifest, indent=1))
        if root.exists():  # a stale or foreign suite: move it aside, then replace it atomically
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            os.replace(root, old / "suite")
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.unlink(lock_path)
        os.close(lock_fd)
    return root


def read_manifest(root: str | os.PathLike) -> dict | None:
    path = Path(root) / "opid_suite.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def ensure_suite(level: str = "full", seed: int = 0, cache_dir: str | os.PathLike | None = None) -> Path:
    """The cached suite of a level, generated on first use (or when the generator changed)."""
    root = suite_root(level, seed, cache_dir)
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:  # one writer; others wait, then reuse
        fcntl.flock(lock, fcntl.LOCK_EX)
        clean_stale_temp(root)
        manifest = read_manifest(root)
        if (manifest is None or manifest.get("version") != GENERATOR_VERSION or manifest.get("level") != level
                or manifest.get("sizes") != LEVELS[level].sizes):  # a level that grew (or shrank) since it was cached
            generate_suite(level, root, seed=seed)
        elif not manifest.get("walkthroughs") and shipped_walkthroughs(level):
            add_walkthroughs(root, plans=shipped_walkthroughs(level))  # a suite cached before plans shipped
    return root


def add_walkthroughs(root: str | os.PathLike, workers: int = 1, progress: bool = True,
                     plans: dict[str, list[str]] | None = None) -> int:
    """Store the planner's plan in every game of a suite that has none; returns how many.

    Resumable: games that have one are skipped, and each game file is replaced atomically.
    With `plans` (problem key -> plan, e.g. the shipped table) it copies instead of planning.
    """
    from multiprocessing import get_context

    from tqdm.auto import tqdm

    root = Path(root)
    keys = {}  # game file -> problem key, for the games without a plan
    for game in sorted(root.glob("json_2.1.1/*/*/*/game.tw-pddl")):
        data = json.loads(game.read_text())
        if "walkthrough" not in data:
            keys[str(game)] = problem_key(data["pddl_problem"])
    todo = [path for path, key in keys.items() if plans is None or key in plans]
    if plans is not None:
        results = ((path, plans[keys[path]]) for path in todo)
    pool = get_context("spawn").Pool(workers) if workers > 1 and plans is None else None
    if plans is None:
        results = pool.imap(_plan_file, todo) if pool else map(_plan_file, todo)
    bar = tqdm(total=len(todo), desc="planning walkthroughs", unit="game", disable=not progress or plans is not None)
    try:
        for path, plan in results:
            data = json.loads(Path(path).read_text())
            data["walkthrough"] = plan
            _write_atomic(Path(path), json.dumps(data, indent=1))
            bar.update()
    finally:
        if pool:
            pool.terminate()
        bar.close()
    manifest = read_manifest(root)
    if manifest is not None and len(todo) == len(keys):
        _write_atomic(root / "opid_suite.json", json.dumps({**manifest, "walkthroughs": True}, indent=1))
    return len(todo)


def problem_key(pddl_problem: str) -> str:
    return hashlib.sha256(pddl_problem.encode()).hexdigest()[:24]


def shipped_walkthroughs(level: str) -> dict[str, list[str]]:
    """Planner plans shipped for a level's default suite: problem key -> walkthrough."""
    path = Path(__file__).with_name(f"walkthroughs_{level}.json")  # package data, shipped in the wheel
    return json.loads(path.read_text()) if path.is_file() else {}


def export_walkthroughs(root: str | os.PathLike, out: str | os.PathLike) -> int:
    """Write a suite's stored plans as a shipped-walkthrough table; returns how many."""
    plans = {}
    for path in sorted(Path(root).glob("json_2.1.1/*/*/*/game.tw-pddl")):
        data = json.loads(path.read_text())
        if "walkthrough" in data:
            plans[problem_key(data["pddl_problem"])] = data["walkthrough"]
    Path(out).write_text(json.dumps(dict(sorted(plans.items())), separators=(",", ":")) + "\n")
    return len(plans)


def _plan_file(path: str) -> tuple[str, list[str]]:
    return path, planner_walkthrough(path)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def planner_walkthrough(gamefile: dict | str) -> list[str]:
    """The engine's PDDL planner's plan from the initial state (0.2-15 s a game)."""
    from opid_envs.alfworld import fastpath
    from opid_envs.alfworld.env import ALFWorldEngine

    engine = ALFWorldEngine()
    with fastpath.planning():
        engine.load(gamefile)
        engine.reset()
    return engine.planner_plan()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m opid_envs.alfworld.generate", description=__doc__.split("\n")[0])
    parser.add_argument("--level", choices=sorted(LEVELS), default="full")
    parser.add_argument("--out", help="output directory (default: $OPID_CACHE/alfworld/<level>)")
    parser.add_argument("--seed", type=int, default=0)
    for split in SPLITS:
        parser.add_argument(f"--{split.replace('_', '-')}", type=int, dest=split,
                            help=f"games in {split} (default: the level's)")
    parser.add_argument("--walkthroughs", action="store_true",
                        help="store the planner's plan in every game (slow; resumes where it stopped)")
    parser.add_argument("--workers", type=int, default=1, help="planner processes for --walkthroughs")
    parser.add_argument("--export-walkthroughs", metavar="JSON",
                        help="also write the suite's plans as a table to ship (walkthroughs_<level>.json)")
    args = parser.parse_args(argv)  # before any engine is created: fast-downward rewrites sys.argv
    sizes = {**LEVELS[args.level].sizes, **{s: getattr(args, s) for s in SPLITS if getattr(args, s) is not None}}
    root = Path(args.out) if args.out else suite_root(args.level, args.seed)
    for folder in clean_stale_temp(root):
        print(f"removed {folder}, left by a killed run", file=sys.stderr)
    manifest = read_manifest(root) or {}
    same = {"version": GENERATOR_VERSION, "level": args.level, "seed": args.seed, "sizes": sizes}
    if any(manifest.get(k) != v for k, v in same.items()):
        generate_suite(args.level, root, seed=args.seed, sizes=sizes)
    else:
        print(f"{root} already holds this suite", file=sys.stderr)
    if args.walkthroughs:
        add_walkthroughs(root, workers=args.workers)
    if args.export_walkthroughs:
        export_walkthroughs(root, args.export_walkthroughs)
    print(root)


if __name__ == "__main__":
    main()
