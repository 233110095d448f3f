"""Bearer-token authentication for Django REST APIs."""

__version__ = "0.1.0"
