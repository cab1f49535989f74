"""Language-conditioned tabletop tasks: objects, randomised layouts, instructions, success detectors.

Every task owns a fixed set of object slots (bodies in the MuJoCo model); each episode samples
their colours, poses and which of them the instruction refers to. "Left" and "right" are the
robot's (left = +y in the base frame, facing +x across the table).

Instructions come from disjoint template sets: `templates` (the instruction the expert's episode
is recorded with), `training_paraphrases` (other wordings of the same request, recorded with each
episode as `instruction_variants` for training-time paraphrase augmentation: a user would write
them, or have a language model write them, for their own demonstrations) and `paraphrases[level]`
(held out; used only by the `language` perturbation, level 1 = synonyms, 2 = restructured
sentences, 3 = chatty indirect requests). Every wording names the manipulated object first
(`reasoning_anchor.instructed_object_row` relies on it).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from vla3d_ros.sim.scene import (
    COLORS,
    ObjectSpec,
    ZoneSpec,
    object_footprint_radius,
    object_half_height,
)

if TYPE_CHECKING:
    from vla3d_ros.sim.env import TabletopEnv

# Where task objects are placed (base frame, metres): comfortably inside the Panda's reach.
WORKSPACE_X = (0.36, 0.64)
WORKSPACE_Y = (-0.22, 0.22)
BOWL_COLORS = {"white": (0.9, 0.9, 0.88), "grey": (0.55, 0.55, 0.58), "brown": (0.5, 0.33, 0.2)}


@dataclass
class TaskInstance:
    """What one episode's task is: the sampled layout and the instruction's referents."""

    poses: dict[str, tuple[float, float, float, float]]  # slot -> (x, y, z, yaw)
    colors: dict[str, tuple[float, float, float]]        # slot -> rgb
    display_names: dict[str, str]                        # slot -> e.g. "red cube"
    fields: dict[str, str]                               # template fields, e.g. {"object": "red cube"}
    roles: dict[str, str] = field(default_factory=dict)  # role -> slot, e.g. {"target": "obj0"}


def sample_positions(rng: np.random.Generator, radii: list[float], occupied: list[tuple[float, float, float]],
                     x_range=WORKSPACE_X, y_range=WORKSPACE_Y, gap: float = 0.03,
                     max_tries: int = 2000) -> list[tuple[float, float]]:
    """Rejection-sample non-overlapping (x, y) for discs of `radii`, avoiding `occupied` (x, y, r).

    Discs are placed largest first; a dead end restarts the whole layout.
    """
    order = np.argsort(radii)[::-1]
    for _ in range(max_tries):
        placed = list(occupied)
        positions: list[tuple[float, float]] = [(0.0, 0.0)] * len(radii)
        for index in order:
            radius = radii[index]
            for _ in range(50):
                x = rng.uniform(x_range[0] + radius, x_range[1] - radius)
                y = rng.uniform(y_range[0] + radius, y_range[1] - radius)
                if all(np.hypot(x - px, y - py) >= radius + pr + gap for px, py, pr in placed):
                    placed.append((x, y, radius))
                    positions[index] = (float(x), float(y))
                    break
            else:
                break
        else:
            return positions
    raise RuntimeError(f"could not place discs of radii {radii} among {len(occupied)} others "
                       f"in x {x_range}, y {y_range}")


class Task:
    """Base class: subclasses define slots, `sample` and `success`."""

    name: str = ""
    description: str = ""
    templates: tuple[str, ...] = ()
    training_paraphrases: tuple[str, ...] = ()
    paraphrases: dict[int, tuple[str, ...]] = {}
    max_steps: int = 80

    def objects(self) -> list[ObjectSpec]:
        raise NotImplementedError

    def zones(self) -> list[ZoneSpec]:
        return []

    def sample(self, rng: np.random.Generator) -> TaskInstance:
        raise NotImplementedError

    def success(self, env: TabletopEnv, instance: TaskInstance) -> bool:
        raise NotImplementedError

    def goal_variants(self, instance: TaskInstance) -> list[TaskInstance]:
        """Every goal this layout admits (the sampled one among them), in a fixed order.

        Same objects, poses and colours; only the referents (`fields`, `roles`) differ. Recording
        several goals per layout (`vla3d gen --goal-variants`) leaves the instruction as the only
        thing that tells the demonstrations apart, so a policy cannot learn the goal from the scene.
        """
        raise NotImplementedError

    def spec(self, slot: str) -> ObjectSpec:
        for obj in self.objects():
            if obj.name == slot:
                return obj
        raise KeyError(f"task {self.name!r} has no object slot {slot!r}")

    def instruction(self, instance: TaskInstance, rng: np.random.Generator, level: int = 0) -> str:
        """A training template (level 0) or a held-out paraphrase of the given level."""
        if level == 0:
            pool = self.templates
        elif level in self.paraphrases:
            pool = self.paraphrases[level]
        else:
            raise ValueError(f"paraphrase level must be 0 or one of {sorted(self.paraphrases)}, got {level}")
        return pool[int(rng.integers(len(pool)))].format(**instance.fields)

    def instruction_variants(self, fields: dict[str, str]) -> list[str]:
        """Every training wording (templates, then training paraphrases) of the request `fields`."""
        return [template.format(**fields) for template in self.templates + self.training_paraphrases]

    def parse_instruction(self, instruction: str) -> dict[str, str] | None:
        """The template fields of an instruction written from one of `templates`; None if none matches."""
        for template in self.templates:
            pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>.+?)", re.escape(template))
            match = re.fullmatch(pattern, instruction)
            if match:
                return match.groupdict()
        return None


def _distinct_colors(rng: np.random.Generator, count: int) -> list[str]:
    names = list(COLORS)
    return [names[i] for i in rng.choice(len(names), size=count, replace=False)]


def _resting_pose(spec: ObjectSpec, xy: tuple[float, float], yaw: float) -> tuple[float, float, float, float]:
    return (xy[0], xy[1], object_half_height(spec), yaw)


class PickPlaceBowl(Task):
    name = "pick_place_bowl"
    description = "pick one of two cubes and a can by colour and shape, and put it in the bowl"
    templates = (
        "put the {object} in the bowl",
        "pick up the {object} and place it in the bowl",
        "place the {object} into the bowl",
    )
    training_paraphrases = (
        "take the {object} and put it in the bowl",
        "the {object} goes into the bowl",
        "lift the {object} and drop it in the bowl",
        "please put the {object} inside the bowl",
        "carry the {object} over to the bowl and let go",
        "can you move the {object} into the bowl",
        # Twenty more (session 10), written like push_to_zone's: the verb and the bowl at different
        # places (the object named first: the reasoning anchor's fact), short and long fillers; no
        # phrase of the held-out `paraphrases`. push_to_zone's language cell was weakest with 11
        # training wordings; a linear probe read its side word from 31 (docs/results.md, session 9).
        "I would like the {object} placed in the bowl",
        "the {object}, please: put it in the bowl",
        "robot, pick the {object} up and put it in the bowl now",
        "use the gripper to lift the {object} and lower it into the bowl",
        "make sure the {object} ends up inside the bowl by picking it up and placing it there",
        "the {object} has one target, the bowl: carry it there",
        "slowly lift the {object} and place it gently in the bowl",
        "first locate the {object}, then put it in the bowl",
        "go ahead and put the {object} in the bowl",
        "please, would you place the {object} into the bowl",
        "your job: the {object} into the bowl, picked up and not pushed",
        "take the {object} to the bowl and let it go there",
        "the {object} needs to go in the bowl; put it in",
        "pick the {object} and put it into the round bowl",
        "i want you to lift the {object} into the bowl and open the gripper",
        "the {object} has to go inside the bowl on the table",
        "with a careful grasp, bring the {object} to the bowl",
        "grasp the {object} and deposit it in the bowl",
        "place the {object} inside the bowl on the table",
        "get the {object} off the table and into the bowl",
    )
    paraphrases = {
        1: ("drop the {object} into the dish", "move the {object} inside the bowl",
            "set the {object} in the bowl"),
        2: ("the {object} belongs in the bowl", "the bowl should end up holding the {object}",
            "grab the {object}, then release it over the bowl"),
        3: ("could you tidy up by putting the {object} in the bowl, please?",
            "I need the {object} in that bowl over there; go ahead and move it",
            "hey robot, find the {object} and leave it resting inside the bowl"),
    }
    max_steps = 80
    bowl_inner_radius = 0.065
    bowl_wall_height = 0.035

    def objects(self) -> list[ObjectSpec]:
        return [ObjectSpec("obj0", "cube", (0.02,)), ObjectSpec("obj1", "cube", (0.02,)),
                ObjectSpec("obj2", "can", (0.022, 0.035)),
                ObjectSpec("bowl", "bowl", (self.bowl_inner_radius, self.bowl_wall_height), mass=0.3)]

    def sample(self, rng: np.random.Generator) -> TaskInstance:
        specs = self.objects()
        colors = _distinct_colors(rng, 3)
        positions = sample_positions(rng, [object_footprint_radius(s) for s in specs], [])
        poses, rgb, names = {}, {}, {}
        for spec, xy, color in zip(specs[:3], positions[:3], colors):
            poses[spec.name] = _resting_pose(spec, xy, rng.uniform(-np.pi / 4, np.pi / 4))
            rgb[spec.name] = COLORS[color]
            names[spec.name] = f"{color} {spec.kind}"
        bowl_color = list(BOWL_COLORS)[int(rng.integers(len(BOWL_COLORS)))]
        poses["bowl"] = (*positions[3], 0.0, 0.0)
        rgb["bowl"] = BOWL_COLORS[bowl_color]
        names["bowl"] = "bowl"
        target = f"obj{int(rng.integers(3))}"
        return TaskInstance(poses, rgb, names, {"object": names[target]}, {"target": target, "place": "bowl"})

    def goal_variants(self, instance: TaskInstance) -> list[TaskInstance]:
        return [replace(instance, fields={"object": instance.display_names[target]},
                        roles={"target": target, "place": "bowl"})
                for target in ("obj0", "obj1", "obj2")]

    def success(self, env: TabletopEnv, instance: TaskInstance) -> bool:
        target = env.object_position(instance.roles["target"])
        bowl = env.object_position("bowl")
        inside = np.hypot(*(target[:2] - bowl[:2])) < self.bowl_inner_radius - 0.01
        low = target[2] < bowl[2] + self.bowl_wall_height + 0.01
        return bool(inside and low and not env.gripper_touches(instance.roles["target"]))


class StackCubes(Task):
    name = "stack_cubes"
    description = "stack a cube named by colour on another cube named by colour (three cubes)"
    templates = (
        "stack the {top} on the {bottom}",
        "put the {top} on top of the {bottom}",
        "place the {top} onto the {bottom}",
    )
    training_paraphrases = (
        "take the {top} and put it on the {bottom}",
        "the {top} goes on top of the {bottom}",
        "lift the {top} and stack it onto the {bottom}",
        "please put the {top} on the {bottom}",
        "carry the {top} over and set it down on the {bottom}",
        "can you stack the {top} on the {bottom}",
    )
    paraphrases = {
        1: ("set the {top} on the {bottom}", "pile the {top} onto the {bottom}",
            "lay the {top} on top of the {bottom}"),
        2: ("the {top} should sit on the {bottom}", "build a tower with the {top} above the {bottom}",
            "pick up the {top}, then release it on the {bottom}"),
        3: ("could you make a little stack, with the {top} resting on the {bottom}?",
            "I'd like the {bottom} underneath the {top}; please arrange them",
            "hey robot, grab the {top} and carefully balance it on the {bottom}"),
    }
    max_steps = 80
    half = 0.02

    def objects(self) -> list[ObjectSpec]:
        return [ObjectSpec(f"obj{i}", "cube", (self.half,)) for i in range(3)]

    def sample(self, rng: np.random.Generator) -> TaskInstance:
        specs = self.objects()
        colors = _distinct_colors(rng, 3)
        positions = sample_positions(rng, [object_footprint_radius(s) for s in specs], [], gap=0.04)
        poses, rgb, names = {}, {}, {}
        for spec, xy, color in zip(specs, positions, colors):
            poses[spec.name] = _resting_pose(spec, xy, rng.uniform(-np.pi / 4, np.pi / 4))
            rgb[spec.name] = COLORS[color]
            names[spec.name] = f"{color} cube"
        top, bottom = (f"obj{i}" for i in rng.choice(3, size=2, replace=False))
        return TaskInstance(poses, rgb, names, {"top": names[top], "bottom": names[bottom]},
                            {"target": top, "place": bottom})

    def goal_variants(self, instance: TaskInstance) -> list[TaskInstance]:
        names = instance.display_names
        return [replace(instance, fields={"top": names[top], "bottom": names[bottom]},
                        roles={"target": top, "place": bottom})
                for top in ("obj0", "obj1", "obj2") for bottom in ("obj0", "obj1", "obj2") if top != bottom]

    def success(self, env: TabletopEnv, instance: TaskInstance) -> bool:
        top = env.object_position(instance.roles["target"])
        bottom = env.object_position(instance.roles["place"])
        aligned = np.hypot(*(top[:2] - bottom[:2])) < self.half
        on_top = abs(top[2] - bottom[2] - 2 * self.half) < 0.008
        bottom_on_table = abs(bottom[2] - self.half) < 0.008
        return bool(aligned and on_top and bottom_on_table and not env.gripper_touches(instance.roles["target"]))


class PushToZone(Task):
    name = "push_to_zone"
    description = "push one of two cans (named by colour) sideways into the left or right zone"
    templates = (
        "push the {object} to the {side} zone",
        "slide the {object} into the {side} zone",
        "push the {object} into the {side} area",
    )
    training_paraphrases = (
        "drag the {object} over to the {side} zone",
        "the {object} goes to the {side} zone; push it",
        "slide the {object} across into the {side} area",
        "please push the {object} until it reaches the {side} zone",
        "send the {object} sliding into the {side} zone",
        "can you push the {object} over to the {side} side",
        "push the {object} toward the {side} and leave it in the zone",
        "bring the {object} to the {side} zone by pushing",
        # Twenty more (session 9): with the eight above, a linear probe of the frozen sentence
        # embedding read the side word of the language suite's levels 1-3 at 98 / 83 / 95 %; with
        # these, 100 / 100 / 100 % (`docs/results.md`, session 9). The side word at different places,
        # short and long fillers; no phrase of the held-out `paraphrases`.
        "on the {side} there is a zone; push the {object} into it",
        "I would like the {object} pushed into the {side} zone",
        "{side} zone please: push the {object} there",
        "robot, push the {object} to the {side} zone now",
        "use the gripper to push the {object} all the way into the {side} zone",
        "make sure the {object} finishes inside the {side} zone by sliding it along the tabletop",
        "the target is the {side} zone: slide the {object} there",
        "slowly push the {object} till it sits inside the {side} zone",
        "I need the {object} in the {side} zone, please push it",
        "first find the {object}, then push it into the {side} zone",
        "the {object} belongs in the {side} zone; slide it over",
        "go ahead and push the {object} into the {side} zone",
        "please, would you push the {object} over into the {side} area",
        "your job: the {object} to the {side} zone, pushed and not carried",
        "take the {object} to the {side} zone, pushing it along",
        "the {side} area is the goal for the {object}; push it in",
        "push the {object} to the {side}-hand zone",
        "i want you to slide the {object} to the {side} zone and let go",
        "there are two zones; the {object} has to be pushed to the {side} one",
        "with a gentle push, send the {object} to the {side} zone",
    )
    paraphrases = {
        1: ("shove the {object} to the {side} zone", "nudge the {object} over to the {side} region",
            "move the {object} to the {side} zone without lifting it"),
        2: ("the {object} should end up in the {side} zone", "get the {object} into the zone on the {side}",
            "keep the {object} on the table and push it until it is in the {side} zone"),
        3: ("could you slide that {object} over into the {side} zone for me?",
            "the {side} zone is where the {object} goes; push it there, please",
            "hey robot, without picking it up, get the {object} across to the {side} zone"),
    }
    max_steps = 80
    zone_center_y = 0.3
    zone_half = (0.15, 0.08)
    can_radius = 0.03
    can_half_height = 0.035

    def objects(self) -> list[ObjectSpec]:
        return [ObjectSpec(f"obj{i}", "can", (self.can_radius, self.can_half_height), mass=0.08)
                for i in range(2)]

    def zones(self) -> list[ZoneSpec]:
        return [ZoneSpec("zone_left", (0.5, self.zone_center_y), self.zone_half, (0.55, 0.8, 0.55, 1.0)),
                ZoneSpec("zone_right", (0.5, -self.zone_center_y), self.zone_half, (0.55, 0.65, 0.9, 1.0))]

    def sample(self, rng: np.random.Generator) -> TaskInstance:
        specs = self.objects()
        colors = _distinct_colors(rng, 2)
        # The pushed can starts between the zones; the other can stays out of its path: the x bands
        # are >= 0.11 m apart, more than two can radii.
        near = rng.random() < 0.5
        x_target = rng.uniform(0.40, 0.47) if near else rng.uniform(0.53, 0.60)
        y_target = rng.uniform(-0.1, 0.1)
        x_other = rng.uniform(0.58, 0.62) if near else rng.uniform(0.38, 0.42)
        y_other = rng.uniform(-0.12, 0.12)
        target, other = (f"obj{i}" for i in rng.permutation(2))
        side = "left" if rng.random() < 0.5 else "right"
        poses = {target: (x_target, y_target, self.can_half_height, 0.0),
                 other: (x_other, y_other, self.can_half_height, 0.0)}
        rgb = {spec.name: COLORS[color] for spec, color in zip(specs, colors)}
        names = {spec.name: f"{color} can" for spec, color in zip(specs, colors)}
        return TaskInstance(poses, rgb, names, {"object": names[target], "side": side},
                            {"target": target, "zone": f"zone_{side}"})

    def goal_variants(self, instance: TaskInstance) -> list[TaskInstance]:
        # Either can may be the target: the x bands keep each out of the other's push path.
        return [replace(instance, fields={"object": instance.display_names[target], "side": side},
                        roles={"target": target, "zone": f"zone_{side}"})
                for target in ("obj0", "obj1") for side in ("left", "right")]

    def zone_bounds(self, zone: str) -> tuple[np.ndarray, np.ndarray]:
        for spec in self.zones():
            if spec.name == zone:
                center, half = np.array(spec.center), np.array(spec.half_size)
                return center - half, center + half
        raise KeyError(f"no zone {zone!r}")

    def success(self, env: TabletopEnv, instance: TaskInstance) -> bool:
        position = env.object_position(instance.roles["target"])
        low, high = self.zone_bounds(instance.roles["zone"])
        upright = abs(position[2] - self.can_half_height) < 0.01
        return bool(np.all(position[:2] >= low) and np.all(position[:2] <= high) and upright)


TASKS: dict[str, Task] = {task.name: task for task in (PickPlaceBowl(), StackCubes(), PushToZone())}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {sorted(TASKS)}")
    return TASKS[name]
