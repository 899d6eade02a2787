"""A minimal Django project served over ASGI behind fastn-asgi-auth."""
