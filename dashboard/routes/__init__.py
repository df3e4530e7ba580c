"""One tiny script per page, which Streamlit's navigation runs; each calls its view."""
