"""The fixed vocabulary of ShapesWorld: shapes, palette, number words, relations, image geometry."""

# Six upright shapes whose silhouettes stay distinct at 14 px even after a blur.
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles",
           "star": "stars", "diamond": "diamonds", "cross": "crosses"}

# Palette colours sit near the corners of the RGB cube so that the nearest-colour rule survives blur,
# noise and colour drift: the closest pair (blue, cyan) is 133 apart, every colour is >= 169 from
# the background.
PALETTE = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 230),
    "yellow": (240, 200, 30),
    "purple": (180, 50, 210),
    "cyan": (20, 200, 210),
}
COLOURS = tuple(PALETTE)
BACKGROUND = (215, 215, 215)

NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
MAX_COUNT = 4

# Relations as stored in Prompt.relation, and their wording in prompt text.
RELATIONS = ("left of", "right of", "above", "below")
RELATION_WORDS = {"left of": "to the left of", "right of": "to the right of",
                  "above": "above", "below": "below"}
INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

CATEGORIES = ("single_object", "two_object", "counting", "colors", "position", "color_attr")

IMAGE_SIZE = 64
MIN_OBJECT = 14
MAX_OBJECT = 24
