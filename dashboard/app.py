"""The script Streamlit runs: ``langneurons dashboard`` (or ``streamlit run
dashboard/app.py`` in a checkout).  Everything happens in :mod:`langneurons.dashboard.main`."""

from langneurons.dashboard.main import main

main()
