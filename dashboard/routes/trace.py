"""The trace page (its code: ``views/trace.py``)."""

from langneurons.dashboard.views import trace

trace.page()
