"""The mask page (its code: ``views/mask.py``)."""

from langneurons.dashboard.views import mask

mask.page()
