"""The tour page (its code: ``views/tour.py``)."""

from langneurons.dashboard.views import tour

tour.page()
