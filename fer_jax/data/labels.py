"""Label tables: the class order of every dataset and of every upstream recipe, in one place.

Expression names are canonical across datasets, so that one dataset's order can be remapped to
another's by name: Anger, Contempt, Disgust, Fear, Happy, Neutral, Sad, Surprise. Official spellings
that differ (RAF-DB "Happiness"/"Sadness", ExpW "angry", ...) are accepted as aliases by `canonical`.

Sources: shared/reference/README.md and the dataset sections of dan.md, faer.md, mftn_fer.md, emotion_fan.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fer_jax.errors import ConfigError

# RAF-DB basic, DAN's index = official file label - 1.
RAFDB = ("Surprise", "Fear", "Disgust", "Happy", "Sad", "Anger", "Neutral")
# AffectNet official expression codes 0..7 (DAN; ImageFolder over folders named by code).
AFFECTNET = ("Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt")
AFFECTNET_7 = AFFECTNET[:7]
# AffectNet codes 8, 9, 10 = None, Uncertain, Non-face: not expressions, excluded by the readers.
AFFECTNET_EXCLUDED_CODES = (8, 9, 10)
# ExpW official label.lst, last column 0..6.
EXPW = ("Anger", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
# Emotion-FAN (cate2label in basic_code/load.py).
AFEW = ("Happy", "Anger", "Disgust", "Fear", "Sad", "Neutral", "Surprise")
CKPLUS_EMOTION_FAN = ("Happy", "Anger", "Disgust", "Fear", "Sad", "Contempt", "Surprise")
# How Emotion-FAN's list files and AFEW's emotion folders spell a canonical name, where they differ.
EMOTION_FAN_SPELLING = {"Anger": "Angry"}
# FERAtt (FER+ order) for CK+ / BU-3DFE.
FERPLUS = ("Neutral", "Happy", "Surprise", "Sad", "Anger", "Disgust", "Fear", "Contempt")
# The raw 1-based `iclass` orders of FERAtt's MATLAB files (feratt.md section 5), which its readers renumber
# into FERPLUS (upstream's `toferp`). CK_RAW is also the official CK+ emotion code order 0..7.
CK_RAW = ("Neutral", "Anger", "Contempt", "Disgust", "Fear", "Happy", "Sad", "Surprise")
BU3DFE_RAW = ("Neutral", "Anger", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Contempt")
# MFTN-FER (and, inferred, FAER on RAF-DB/AffectNet): ImageFolder over folders named by emotion.
MFTN_7 = ("Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")
MFTN_8 = ("Anger", "Contempt", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")

# CelebA: the 40 official attributes in official order (= FAER's TASKS list).
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones",
    "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin",
    "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair",
    "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace",
    "Wearing_Necktie", "Young",
)

_ALIASES = {
    "angry": "Anger", "anger": "Anger",
    "contempt": "Contempt",
    "disgust": "Disgust", "disgusted": "Disgust",
    "fear": "Fear", "fearful": "Fear",
    "happy": "Happy", "happiness": "Happy",
    "neutral": "Neutral",
    "sad": "Sad", "sadness": "Sad",
    "surprise": "Surprise", "surprised": "Surprise",
}

# Named orders a recipe can ask for with `class_order="<name>"`.
ORDERS = {
    "rafdb": RAFDB,
    "affectnet": AFFECTNET,
    "expw": EXPW,
    "afew": AFEW,
    "ckplus_emotion_fan": CKPLUS_EMOTION_FAN,
    "ferplus": FERPLUS,
}
# Orders that sort the source's own class names: MFTN_7 or MFTN_8, whichever fits the source.
SORTED_ORDERS = ("alphabetical", "mftn")


def canonical(name: str) -> str:
    """Returns the canonical spelling of an expression name (attribute names pass through).

    Raises:
        ConfigError: the name is not a known expression and not a CelebA attribute.
    """
    if name in CELEBA_ATTRIBUTES:
        return name
    try:
        return _ALIASES[name.lower()]
    except KeyError:
        raise ConfigError(
            f"unknown class name {name!r}; expected one of {sorted(set(_ALIASES.values()))} "
            "or a CelebA attribute") from None


def resolve_order(order: str | Sequence[str], class_names: Sequence[str]) -> tuple[str, ...]:
    """Turns a named order or a list of names into a tuple of canonical names for these classes."""
    if isinstance(order, str):
        if order in SORTED_ORDERS:
            return tuple(sorted(class_names))
        if order not in ORDERS:
            raise ConfigError(f"unknown class_order {order!r}; expected a list of class names or one of "
                              f"{sorted(ORDERS) + list(SORTED_ORDERS)}")
        order = ORDERS[order]
    return tuple(canonical(n) for n in order)


def remap_permutation(class_names: Sequence[str], order: str | Sequence[str]) -> np.ndarray:
    """Returns `perm` with `perm[old_index] = new_index` so that `new_names[perm[i]] == class_names[i]`.

    Args:
        class_names: the source's classes, canonical names, in the source's order.
        order: the wanted order: a list of names (aliases allowed) or a key of `ORDERS`.

    Raises:
        ConfigError: `order` is not a permutation of `class_names`.
    """
    new = resolve_order(order, class_names)
    if sorted(new) != sorted(class_names):
        raise ConfigError(f"class_order {list(new)} is not a permutation of the dataset's classes "
                          f"{list(class_names)}")
    return np.array([new.index(n) for n in class_names], dtype=np.int64)
