"""pertstore: an embedding feature store for perturbation-response prediction.

>>> from pertstore import Store
>>> store = Store.open("./pertstore-data")
>>> ds = store.align(["string_spectral", "esm2"], ["TP53", "ENSG00000141510", "BRCA1"])
"""

from importlib.metadata import version as _version

from pertstore._config import Settings, get_settings
from pertstore._store import Store
from pertstore.errors import ConflictError, CorruptedSetError, InvalidInputError, NotFoundError, PertstoreError

__version__ = _version("pertstore")
__all__ = [
    "ConflictError",
    "CorruptedSetError",
    "InvalidInputError",
    "NotFoundError",
    "PertstoreError",
    "Settings",
    "Store",
    "get_settings",
]
