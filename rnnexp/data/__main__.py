"""`python -m rnnexp.data`: download what can be downloaded into the data directory, explain the rest."""

import sys

from rnnexp.data.sources import download_all
from rnnexp.errors import UserError

try:
    download_all()
except UserError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
