"""The steering page (its code: ``views/steering.py``)."""

from langneurons.dashboard.views import steering

steering.page()
