"""vmware.osam daemons."""
__version__ = "0.1.0"
