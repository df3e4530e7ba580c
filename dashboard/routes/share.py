"""The share page (its code: ``views/share.py``)."""

from langneurons.dashboard.views import share

share.page()
