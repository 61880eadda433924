"""imcsim: a simulator of in-memory-computing hardware that learns on the device."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("imcsim")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"

REPORT_SCHEMA_VERSION = 1
