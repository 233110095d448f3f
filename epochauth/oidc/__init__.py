"""Browser login through one or several OpenID providers (mozilla-django-oidc, several providers).

``providers`` and ``backchannel`` (back-channel logout) need only epochauth itself; ``backend``,
``views`` and ``urls`` need mozilla-django-oidc (``pip install django-epochauth[oidc]``).
"""
