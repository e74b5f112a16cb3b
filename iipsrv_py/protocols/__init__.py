"""Request parsers, one per protocol.  Pure: request text in, frozen request out."""

# The IIP parser first: it completes its command table with iip_data's, which builds on its
# Command class, so iip must be the one to import iip_data whichever module is asked for first.
from . import iip  # noqa: F401
