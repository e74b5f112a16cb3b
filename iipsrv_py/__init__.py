"""iipsrv_py: an IIPImage-compatible image server (IIP, IIIF, DeepZoom, Zoomify)."""

__version__ = "0.1.0"

# What the Server header and the IIP-server object announce.
SERVER_SOFTWARE = f"iipsrv-py/{__version__}"
