"""The detector comparison page (its code: ``views/detectors.py``)."""

from langneurons.dashboard.views import detectors

detectors.page()
