"""Object words of each dataset, for object naming and attention grounding (:mod:`captioning.metrics.grounding`):
a mapping of caption words to box categories.

:data:`SHAPES_WORDS` comes from the shapes generator's own word lists (:data:`captioning.data.shapes.SHAPES`).
:data:`COCO_WORDS` maps caption words to the 80 COCO instance categories (singular and plural forms; made for this
project after the word lists commonly used for COCO object hallucination, e.g. Rohrbach et al. 2018 "Object
Hallucination in Image Captioning"; it is not exhaustive: words missing from it are simply not scored).
"""

from __future__ import annotations

from collections.abc import Mapping

from captioning.data.shapes import SHAPES

SHAPES_WORDS: Mapping[str, str] = {word: shape for shape, words in SHAPES.items() for word in words}

_COCO_SYNONYMS: dict[str, tuple[str, ...]] = {
    "person": ("person", "people", "man", "men", "woman", "women", "boy", "boys", "girl", "girls", "child",
               "children", "kid", "kids", "guy", "guys", "lady", "ladies", "player", "players", "skier", "skiers",
               "surfer", "surfers", "skateboarder", "skateboarders", "baby", "toddler", "adult", "adults"),
    "bicycle": ("bicycle", "bicycles", "bike", "bikes", "cycle"),
    "car": ("car", "cars", "taxi", "sedan"),
    "motorcycle": ("motorcycle", "motorcycles", "motorbike", "motorbikes", "scooter", "scooters"),
    "airplane": ("airplane", "airplanes", "plane", "planes", "jet", "jets", "aircraft", "airliner"),
    "bus": ("bus", "buses", "busses"),
    "train": ("train", "trains", "locomotive"),
    "truck": ("truck", "trucks", "pickup"),
    "boat": ("boat", "boats", "ship", "ships", "sailboat", "kayak", "canoe"),
    "traffic light": ("stoplight", "stoplights"),
    "fire hydrant": ("hydrant", "hydrants"),
    "stop sign": ("stop",),
    "parking meter": ("meter", "meters"),
    "bench": ("bench", "benches"),
    "bird": ("bird", "birds", "pigeon", "pigeons", "seagull", "seagulls", "duck", "ducks", "parrot"),
    "cat": ("cat", "cats", "kitten", "kittens", "kitty"),
    "dog": ("dog", "dogs", "puppy", "puppies", "pup"),
    "horse": ("horse", "horses", "pony", "ponies"),
    "sheep": ("sheep", "lamb", "lambs"),
    "cow": ("cow", "cows", "cattle", "bull", "bulls", "calf"),
    "elephant": ("elephant", "elephants"),
    "bear": ("bear", "bears"),
    "zebra": ("zebra", "zebras"),
    "giraffe": ("giraffe", "giraffes"),
    "backpack": ("backpack", "backpacks"),
    "umbrella": ("umbrella", "umbrellas", "parasol"),
    "handbag": ("handbag", "handbags", "purse", "purses"),
    "tie": ("tie", "ties", "necktie"),
    "suitcase": ("suitcase", "suitcases", "luggage"),
    "frisbee": ("frisbee", "frisbees"),
    "skis": ("skis", "ski"),
    "snowboard": ("snowboard", "snowboards"),
    "sports ball": ("ball", "balls", "football", "baseball", "soccer"),
    "kite": ("kite", "kites"),
    "baseball bat": ("bat", "bats"),
    "baseball glove": ("glove", "gloves", "mitt"),
    "skateboard": ("skateboard", "skateboards"),
    "surfboard": ("surfboard", "surfboards"),
    "tennis racket": ("racket", "rackets", "racquet"),
    "bottle": ("bottle", "bottles"),
    "wine glass": ("glass", "glasses"),
    "cup": ("cup", "cups", "mug", "mugs"),
    "fork": ("fork", "forks"),
    "knife": ("knife", "knives"),
    "spoon": ("spoon", "spoons"),
    "bowl": ("bowl", "bowls"),
    "banana": ("banana", "bananas"),
    "apple": ("apple", "apples"),
    "sandwich": ("sandwich", "sandwiches", "burger", "sub"),
    "orange": ("orange", "oranges"),
    "broccoli": ("broccoli",),
    "carrot": ("carrot", "carrots"),
    "hot dog": ("hotdog", "hotdogs"),
    "pizza": ("pizza", "pizzas"),
    "donut": ("donut", "donuts", "doughnut", "doughnuts"),
    "cake": ("cake", "cakes", "cupcake", "cupcakes"),
    "chair": ("chair", "chairs", "stool"),
    "couch": ("couch", "couches", "sofa", "sofas"),
    "potted plant": ("plant", "plants"),
    "bed": ("bed", "beds"),
    "dining table": ("table", "tables"),
    "toilet": ("toilet", "toilets"),
    "tv": ("tv", "television", "televisions"),
    "laptop": ("laptop", "laptops", "computer", "computers"),
    "mouse": ("mouse",),
    "remote": ("remote", "remotes", "controller"),
    "keyboard": ("keyboard", "keyboards"),
    "cell phone": ("phone", "phones", "cellphone", "smartphone"),
    "microwave": ("microwave", "microwaves"),
    "oven": ("oven", "ovens", "stove"),
    "toaster": ("toaster", "toasters"),
    "sink": ("sink", "sinks"),
    "refrigerator": ("refrigerator", "refrigerators", "fridge", "fridges"),
    "book": ("book", "books"),
    "clock": ("clock", "clocks"),
    "vase": ("vase", "vases"),
    "scissors": ("scissors",),
    "teddy bear": ("teddy",),
    "hair drier": ("dryer", "drier", "hairdryer"),
    "toothbrush": ("toothbrush", "toothbrushes"),
}  # fmt: skip
COCO_WORDS: Mapping[str, str] = {word: category for category, words in _COCO_SYNONYMS.items() for word in words}


def synonyms_for(categories: set[str]) -> Mapping[str, str]:
    """The synonym table of a dataset's box categories: the shapes words, or for any other dataset COCO's, plus each
    one-word category naming itself."""
    if categories <= set(SHAPES):
        return SHAPES_WORDS
    return {**{c: c for c in categories if " " not in c}, **COCO_WORDS}
