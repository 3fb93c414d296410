"""fakestor: a local stand-in for Amazon EBS, with real block devices and a Docker plugin."""

__version__ = "0.1.0"
