"""The neuron map page (its code: ``views/neuron_map.py``)."""

from langneurons.dashboard.views import neuron_map

neuron_map.page()
