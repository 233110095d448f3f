"""Moving from djangorestframework-simplejwt without logging anyone out (``pip install
django-epochauth[simplejwt]``, ``"epochauth.contrib.simplejwt"`` in ``INSTALLED_APPS``).

While the window is open (until ``EPOCHAUTH["SIMPLEJWT_MIGRATION_ENDS"]``), access tokens of the site's
``SIMPLE_JWT`` setup are accepted by :class:`~epochauth.authentication.BearerAuthentication` and simplejwt
refresh tokens are exchanged, once each, for our sessions at ``POST /auth/token/refresh/``.
"""
