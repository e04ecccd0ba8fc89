"""Small, complete apps that use the library: run one with ``python -m examples.flask_app``."""
