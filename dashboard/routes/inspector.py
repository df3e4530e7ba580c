"""The inspector page (its code: ``views/inspector.py``)."""

from langneurons.dashboard.views import inspector

inspector.page()
