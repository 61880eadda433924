"""A user's network, as plain torch: imcsim maps its conv and linear layers onto the array.

Run it in cost-only mode (the config beside this file names it by file and function):

    imcsim run examples/my_model_cost.yaml

Its last linear layer is its own classifier: the workload replaces it by a head per task.
"""

from torch import nn


def build(width: int = 32, classes: int = 10) -> nn.Module:
    """A small residual-free CNN for 32 x 32 RGB images: three conv stages and a classifier."""

    def stage(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1, groups=cout, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    return nn.Sequential(stage(3, width, 1), stage(width, 2 * width, 2), stage(2 * width, 4 * width, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, classes))
