"""The overview page (its code: ``views/overview.py``)."""

from langneurons.dashboard.views import overview

overview.page()
