"""Progress bars: tqdm's, in a terminal or a notebook, whose saved output ends in their final state."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(**options: Any) -> Any:
    """A ``tqdm.auto`` bar with ``options``; in a notebook kernel, one whose saved output (nbconvert,
    a saved notebook opened without its kernel, GitHub) shows its last state, not its first."""
    from tqdm.auto import tqdm

    notebook = sys.modules.get("tqdm.notebook")  # imported by tqdm.auto in a notebook kernel only
    if notebook is None or not issubclass(tqdm, notebook.tqdm) or options.get("disable"):
        return tqdm(**options)
    return _notebook_bar_class()(**options)


def _notebook_bar_class() -> type:
    from IPython.display import display
    from tqdm.notebook import tqdm as notebook_tqdm

    class NotebookBar(notebook_tqdm):
        """tqdm's notebook bar shown under a display id. Its plain-text form, which a saved notebook
        keeps beside the widget, is written once when shown ("0/4" forever); on close the display is
        updated, so the text says where the bar ended."""

        def __init__(self, **options: Any) -> None:
            super().__init__(display=False, **options)
            self.handle = display(self.container, display_id=True)
            self.displayed = True

        def close(self) -> None:
            super().close()
            if self.handle is not None:
                self.handle.update(self.container)
                self.handle = None

    return NotebookBar
