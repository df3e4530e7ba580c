"""The heatmaps page (its code: ``views/heatmaps.py``)."""

from langneurons.dashboard.views import heatmaps

heatmaps.page()
