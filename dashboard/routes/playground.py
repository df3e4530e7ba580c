"""The playground page (its code: ``views/playground.py``)."""

from langneurons.dashboard.views import playground

playground.page()
