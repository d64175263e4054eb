"""Per-site gradient strategies.

Each strategy follows the :class:`~vi_ext.estimators.base.Strategy` protocol; choose one per
site with ``estimators={"z": ...}`` or ``infer={"estimator": ...}`` in the guide.
"""

from vi_ext.estimators.base import Site, Strategy, is_strategy
from vi_ext.estimators.defaults import default_strategy
from vi_ext.estimators.enum import Enum, LocalEnum, enum, local_enum
from vi_ext.estimators.mvd import MVD, mvd
from vi_ext.estimators.reinforce import Reinforce, reinforce, reinforce_from
from vi_ext.estimators.reparam import Reparam, dreg, reparam, stl

__all__ = [
    "MVD",
    "Enum",
    "LocalEnum",
    "Reinforce",
    "Reparam",
    "Site",
    "Strategy",
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
