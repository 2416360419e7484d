"""Import-only stand-in; see the package docstring."""


def __getattr__(name):
    raise AttributeError(f"torchvision stand-in: transforms.{name} is not available in the DICE test harness")
