"""Per-draw gradient strategies.

Each strategy follows the public protocol of :mod:`vi_ext.estimators.base` (``sample`` ->
:class:`Draw`, optionally ``contribute`` -> :class:`Contribution` and ``answer``); the
built-in ones use nothing else. Choose one per site with ``estimators={"z": ...}`` or
``infer={"estimator": ...}`` in the guide.
"""

from vi_ext.estimators.base import Contribution, Draw, Site, Strategy, as_draw, is_strategy
from vi_ext.estimators.defaults import default_strategy
from vi_ext.estimators.enum import Enum, LocalEnum, enum, local_enum
from vi_ext.estimators.mvd import MVD, mvd
from vi_ext.estimators.reinforce import Reinforce, reinforce, reinforce_from
from vi_ext.estimators.reparam import (
    DoublyReparameterized,
    Reparam,
    StickingTheLanding,
    dreg,
    reparam,
    stl,
)

__all__ = [
    "MVD",
    "Contribution",
    "DoublyReparameterized",
    "Draw",
    "Enum",
    "LocalEnum",
    "Reinforce",
    "Reparam",
    "Site",
    "StickingTheLanding",
    "Strategy",
    "as_draw",
    "default_strategy",
    "dreg",
    "enum",
    "mvd",
    "is_strategy",
    "local_enum",
    "reinforce",
    "reinforce_from",
    "reparam",
    "stl",
]
