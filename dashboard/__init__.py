"""The LangNeurons dashboard (Streamlit): ``langneurons dashboard`` starts it.

It is thin over the library: pages draw widgets and call ``langneurons``; importing this
package needs the optional extra (``pip install 'langneurons[dashboard]'``).
"""
