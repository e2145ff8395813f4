"""The dashboard's pages, one module each (run as page scripts by ``st.navigation``)."""
