"""epochauth as an OAuth 2.0 authorization server, on django-oauth-toolkit (optional sub-app).

Add ``"oauth2_provider"`` and ``"epochauth.oauth"`` to ``INSTALLED_APPS`` and point DOT's settings at
these classes (see README): DOT keeps clients, grants and refresh tokens; the access tokens are ours.
"""
