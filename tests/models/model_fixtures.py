"""Helpers shared by the model tests."""

import torch


def randomize_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics and affine weights, so eval-mode equalities are not
    vacuous (freshly initialised BatchNorm is the identity); returns ``module``."""
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.uniform_(m.bias, -0.2, 0.2)
    return module
