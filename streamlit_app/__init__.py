"""The Streamlit dashboard; ``app.py`` is what ``streamlit run`` runs."""
