"""Moved to ``dataformer_nb.testing`` (``from dataformer_nb.testing import FakeBatchServer``);
this name stays for notebooks written against 0.1."""

import warnings

from .testing.batch_server import FakeBatchServer

warnings.warn("dataformer_nb.fake_batch_server moved to dataformer_nb.testing: "
              "from dataformer_nb.testing import FakeBatchServer", DeprecationWarning, stacklevel=2)

__all__ = ["FakeBatchServer"]
