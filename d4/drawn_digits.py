"""Digits drawn as pen strokes, in the forms people write them, and drawn with a hand's random variation.

Each form is a list of strokes on the /draw page's 280x280 pad, each stroke a list of (x, y)
points. `DIGIT_STROKES` holds one plain form per digit (the tests draw them on /draw and send
them to /predict/image); `EUROPEAN_FORMS` holds the forms MNIST's American writers rarely used
and other writers often do: the 1 with a long diagonal flag (with and without a foot), the open
4 shaped like an "h", the crossed 7, the 9 on a straight or curved tail, and the other digits'
common forms beside them. `varied` draws a form as one hand might (slant, turn, proportions, a
smooth wobble) and `draw` renders it with a round pen. benchmarks/bench_handwriting.py builds
its drawn-digit sets from these, with no hidden data.
"""

import math
import random

from PIL import Image, ImageDraw

PAD = 280  # the /draw page's canvas, in its own pixels
Point = tuple[float, float]
Stroke = list[Point]
Form = list[Stroke]

SLANT = 0.3  # x moves by up to this times the height above the pad's centre (about +-17 degrees)
TURN_DEGREES = 8
STRETCH = (0.75, 1.15)  # the width's factor; the height's varies by half as much
WOBBLE = 10  # pad pixels the smooth random displacement may move a point
NUDGE = 2  # pad pixels each point may move on its own, as a hand's tremor


def ellipse(
    centre_x: float,
    centre_y: float,
    radius_x: float,
    radius_y: float,
    start: float = 0,
    turn: float = 360,
) -> Stroke:
    """Points along an ellipse, clockwise on screen from `start` degrees (0 = top) through `turn` degrees."""
    steps = max(2, round(36 * abs(turn) / 360))
    angles = [math.radians(start + turn * step / steps) for step in range(steps + 1)]
    return [(centre_x + radius_x * math.sin(a), centre_y - radius_y * math.cos(a)) for a in angles]


def _figure_of_eight(centre_x: float, top: float, bottom: float, half_width: float) -> Stroke:
    """An 8 in one stroke: from the top, round the upper loop to the right, cross, round the lower loop to the left."""
    middle, half_height = (top + bottom) / 2, (bottom - top) / 2
    angles = [2 * math.pi * step / 48 for step in range(49)]
    return [
        (centre_x + half_width * math.sin(2 * a), middle - half_height * math.cos(a))
        for a in angles
    ]


# One plain form per digit, as the tests draw it.
DIGIT_STROKES: dict[int, Form] = {
    0: [ellipse(140, 140, 50, 90)],
    1: [[(140, 40), (140, 240)]],
    2: [[(80, 90), (110, 55), (160, 50), (195, 85), (190, 125), (85, 235), (205, 235)]],
    3: [[(80, 60), (190, 60), (130, 135), (185, 160), (190, 205), (150, 235), (80, 225)]],
    4: [[(170, 240), (170, 40), (70, 170), (210, 170)]],
    5: [
        [(195, 50), (95, 50), (90, 130), (150, 120), (190, 160), (180, 215), (140, 235), (85, 220)]
    ],
    6: [
        [
            (180, 50),
            (120, 90),
            (90, 160),
            (100, 220),
            (150, 235),
            (190, 200),
            (180, 150),
            (130, 140),
            (95, 170),
        ]
    ],
    7: [[(70, 50), (200, 50), (120, 240)]],
    8: [ellipse(140, 85, 45, 45), ellipse(140, 185, 55, 55)],
    9: [ellipse(135, 90, 50, 45), [(183, 90), (175, 240)]],
}

# The forms other writers use, by digit; the names say what sets each apart.
EUROPEAN_FORMS: dict[int, dict[str, Form]] = {
    0: {
        "oval": [ellipse(140, 140, 55, 95)],
        "oval, closed with an overlap": [ellipse(140, 140, 50, 95, -20, 400)],
    },
    1: {
        "long flag": [[(80, 120), (165, 40), (165, 240)]],
        "long flag and a foot": [[(80, 120), (165, 40), (165, 240)], [(110, 240), (220, 240)]],
    },
    2: {
        "plain": DIGIT_STROKES[2],
        "looped base": [
            [
                (80, 90),
                (110, 55),
                (160, 50),
                (195, 85),
                (185, 130),
                (100, 215),
                (80, 238),
                (95, 250),
                (112, 235),
            ]
            + [(100, 222), (140, 238), (210, 235)]
        ],
    },
    3: {
        "round": [ellipse(135, 92, 52, 48, -70, 220) + ellipse(135, 188, 58, 52, -20, 240)],
        "flat top": DIGIT_STROKES[3],
    },
    4: {
        "open, like an h": [[(90, 40), (85, 150), (105, 165), (215, 160)], [(175, 55), (175, 245)]],
        "open, slanted": [[(110, 40), (70, 165), (215, 160)], [(170, 80), (170, 245)]],
        "open, like a ч": [
            [(85, 40), (88, 120), (110, 155), (150, 162), (182, 150)],
            [(182, 40), (182, 245)],
        ],
    },
    5: {
        "separate flag": [
            [(100, 50), (92, 130), (150, 118), (190, 160), (180, 215), (140, 238), (85, 222)]
        ]
        + [[(100, 50), (200, 45)]],
        "one stroke": DIGIT_STROKES[5],
    },
    6: {
        "plain": DIGIT_STROKES[6],
        "straight back": [
            [(175, 40), (110, 125), (95, 195), (125, 240), (175, 230), (188, 190), (160, 158)]
        ]
        + [[(160, 158), (120, 162), (97, 195)]],
    },
    7: {
        "crossed": [[(70, 50), (200, 50), (120, 240)], [(105, 145), (195, 145)]],
        "crossed, with a serif": [
            [(75, 92), (72, 52), (200, 50), (120, 240)],
            [(105, 145), (195, 145)],
        ],
    },
    8: {"two loops": DIGIT_STROKES[8], "one stroke": [_figure_of_eight(140, 40, 240, 58)]},
    9: {
        "straight tail": [ellipse(135, 88, 52, 48), [(187, 88), (185, 245)]],
        "curved tail": [ellipse(135, 88, 52, 48), [(187, 88), (182, 195), (160, 238), (105, 240)]],
        "small loop, long tail": [ellipse(140, 78, 42, 38), [(182, 78), (178, 245)]],
    },
}


# The forms behind the errors left on real handwriting after the European forms (issue #29), drawn
# as the issue describes them. Both real sets stretch each digit to fill a square before scanning,
# which is what turns these into other digits: a rounded 4 becomes a bowl (a 6), a 9 whose tail
# curls back becomes a 3 or an 8, a crossed 7 with a slanted stem a "Z" with a bar, a 2 with a small
# loop at its base an 8. Each form comes in a few proportions, which `varied` varies further.
OTHER_HANDS_FORMS: dict[int, dict[str, Form]] = {
    2: {
        "small loop at the base": [
            [(80, 85), (112, 52), (160, 48), (195, 82), (188, 128), (110, 205), (96, 226)]
            + ellipse(94, 236, 14, 12, 0, 330)
            + [(130, 240), (210, 236)]
        ],
        "round loop at the base": [
            [(85, 80), (120, 50), (170, 52), (195, 95), (170, 150), (105, 210)]
            + ellipse(92, 226, 20, 18, 30, 330)
            + [(120, 236), (165, 240), (212, 232)]
        ],
        "narrow, looped base": [
            [(100, 80), (125, 48), (165, 50), (182, 90), (160, 150), (118, 208)]
            + ellipse(112, 226, 16, 14, 20, 330)
            + [(135, 238), (190, 235)]
        ],
    },
    4: {
        "one stroke like a ч, short upright": [
            [
                (85, 40),
                (82, 110),
                (92, 150),
                (120, 168),
                (160, 168),
                (192, 150),
                (188, 180),
                (182, 210),
            ]
        ],
        "like a ч, upright from the crossbar": [
            [(80, 45), (80, 115), (95, 152), (125, 166), (165, 165), (205, 155)],
            [(178, 140), (176, 195)],
        ],
        "like a ч, wide and low": [
            [(70, 70), (72, 130), (90, 165), (130, 178), (180, 172), (215, 160)],
            [(190, 150), (187, 205)],
        ],
        "arm and upright nearly closing a triangle": [
            [(135, 42), (78, 162), (212, 160)],
            [(152, 40), (170, 245)],
        ],
        "arm and upright leaning together": [
            [(120, 45), (70, 170), (210, 168)],
            [(140, 50), (182, 250)],
        ],
    },
    7: {
        "crossed, slanted like a Z": [[(75, 50), (205, 48), (90, 240)], [(100, 148), (190, 142)]],
        "crossed, slanted, with a serif": [
            [(72, 88), (75, 52), (205, 50), (85, 238)],
            [(95, 150), (195, 140)],
        ],
        "crossed, narrow": [[(100, 50), (185, 48), (105, 240)], [(110, 148), (180, 142)]],
        "crossed, narrow, with a serif": [
            [(98, 80), (100, 50), (188, 52), (100, 236)],
            [(108, 150), (182, 140)],
        ],
    },
    9: {
        "tail curled back left, like a g": [
            ellipse(138, 82, 46, 40),
            [(184, 82), (186, 170), (168, 222), (130, 242), (92, 232), (78, 208)],
        ],
        "small loop open on the left, g tail": [
            ellipse(140, 78, 38, 34, 300, 320),
            [(178, 70), (182, 165), (165, 225), (125, 245), (88, 230)],
        ],
        "tail curled up towards the loop": [
            ellipse(135, 82, 48, 42),
            [(183, 82), (188, 175), (172, 228), (138, 240), (112, 215), (114, 180), (124, 160)],
        ],
    },
}


def jittered(form: Form, rng: random.Random, by: float) -> Form:
    """The form with each point moved on its own by up to `by` pad pixels in x and y."""
    return [
        [(x + rng.uniform(-by, by), y + rng.uniform(-by, by)) for x, y in stroke] for stroke in form
    ]


def varied(form: Form, rng: random.Random) -> Form:
    """The form as one hand might draw it: slanted, turned and stretched about the pad's centre, then wobbled.

    The wobble is a smooth displacement (two random waves per axis), so a loop stays a loop and a
    straight stroke bends a little, as a hand's do; NUDGE adds a tremor of each point on its own.
    """
    slant = rng.uniform(-SLANT, SLANT)
    turn = math.radians(rng.uniform(-TURN_DEGREES, TURN_DEGREES))
    stretch_x = rng.uniform(*STRETCH)
    stretch_y = 1 + (rng.uniform(*STRETCH) - 1) / 2
    waves = [(rng.uniform(0.5, 1.5), rng.uniform(0, 2 * math.pi)) for _ in range(4)]

    def moved(x: float, y: float) -> Point:
        x, y = (x - PAD / 2) * stretch_x, (y - PAD / 2) * stretch_y
        x -= slant * y  # y grows downwards: a positive slant leans the top to the right
        x, y = x * math.cos(turn) - y * math.sin(turn), x * math.sin(turn) + y * math.cos(turn)
        (fx, px), (fy, py), (gx, qx), (gy, qy) = waves
        x += WOBBLE / 2 * (math.sin(fx * y / 40 + px) + math.sin(gx * x / 40 + qx))
        y += WOBBLE / 2 * (math.sin(fy * x / 40 + py) + math.sin(gy * y / 40 + qy))
        return x + PAD / 2, y + PAD / 2

    return jittered([[moved(x, y) for x, y in stroke] for stroke in form], rng, NUDGE)


def scaled(form: Form, factor: float, left: float, top: float) -> Form:
    """The form shrunk or enlarged by `factor` about the pad's corner, then moved by (left, top)."""
    return [[(x * factor + left, y * factor + top) for x, y in stroke] for stroke in form]


def draw(form: Form, pen_width: float, size: tuple[int, int] = (PAD, PAD)) -> Image.Image:
    """Black strokes on white paper (mode "L"), drawn with a round pen `pen_width` pixels wide."""
    page = Image.new("L", size, 255)
    pen = ImageDraw.Draw(page)
    radius = pen_width / 2
    for stroke in form:
        pen.line(stroke, fill=0, width=round(pen_width), joint="curve")
        for x, y in (stroke[0], stroke[-1]):  # round ends, as a pen leaves them
            pen.ellipse((x - radius, y - radius, x + radius, y + radius), fill=0)
    return page
