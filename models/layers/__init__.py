"""Lipschitz building blocks of HyCAS, one per file; each states its certified bound."""

from models.layers.activations import MaxMin
from models.layers.additive_skip import AdditiveSkip
from models.layers.aol import AOLConv2d
from models.layers.base import (
    LipschitzModule,
    LipschitzSequential,
    ZeroPaddedConvolution,
    apply_layer,
    fast_training,
)
from models.layers.flatten import Flatten
from models.layers.frequency import FrequencyFilter, orthonormal_dct_matrix
from models.layers.gates import ConvexGate, ConvexResidual
from models.layers.head import NormalizedLinear
from models.layers.normalize import Standardize
from models.layers.omega import OmegaSource
from models.layers.pooling import InvertibleDownsample, ScaledAvgPool2d
from models.layers.random_projection import RandomProjectionConv2d
from models.layers.stochastic_attention import StochasticAttention

__all__ = [
    "AOLConv2d",
    "AdditiveSkip",
    "ConvexGate",
    "ConvexResidual",
    "Flatten",
    "FrequencyFilter",
    "InvertibleDownsample",
    "LipschitzModule",
    "LipschitzSequential",
    "MaxMin",
    "NormalizedLinear",
    "OmegaSource",
    "RandomProjectionConv2d",
    "ScaledAvgPool2d",
    "Standardize",
    "StochasticAttention",
    "ZeroPaddedConvolution",
    "apply_layer",
    "fast_training",
    "orthonormal_dct_matrix",
]
