"""The Streamlit dashboard; ``app.py`` is what ``streamlit run`` runs, and
``python -m streamlit_app`` runs that."""
