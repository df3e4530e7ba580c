"""The ablation page (its code: ``views/ablation.py``)."""

from langneurons.dashboard.views import ablation

ablation.page()
