"""A NumPyro model as a log density over a flat unconstrained vector: the names boosting
used before they served the BlackJAX bridge too; they live in :mod:`vi_ext.flat`."""

from vi_ext.flat import (
    DensityModel,
    FlatModel,
    FunctionDensity,
    ModelDensity,
    as_density,
    from_function,
    from_model,
    unravel,
)

#: the former name of :class:`~vi_ext.flat.FlatModel`
Target = FlatModel

__all__ = ["DensityModel", "FlatModel", "FunctionDensity", "ModelDensity", "Target",
           "as_density", "from_function", "from_model", "unravel"]
