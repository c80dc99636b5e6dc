"""SmearScope offline app: inference core (no Streamlit) and its Streamlit page."""
