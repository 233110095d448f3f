"""The relying party's pages (tests/rp_settings.py): who is signed in, and the tokens it holds
(shown for the test to check them at the provider; a real site keeps them to itself)."""

from urllib.parse import urlencode

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.urls import include, path
from django.utils.html import escape


def provider_logout_url(request: HttpRequest) -> str:
    """RP-initiated logout at the provider, with the ID token as hint, back to our home page."""
    query = {
        "id_token_hint": request.session.get("oidc_id_token", ""),
        "post_logout_redirect_uri": request.build_absolute_uri("/"),
    }
    return f"{settings.OP}/o/logout/?{urlencode(query)}"


def home(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return HttpResponse(
            '<h1>Signed out</h1><a id="login" href="/oidc/authenticate/">Sign in</a>'
        )
    return HttpResponse(
        f"<h1>Signed in as {escape(request.user.email)}</h1>"
        '<form method="post" action="/oidc/logout/">'
        f'<input type="hidden" name="csrfmiddlewaretoken" value="{get_token(request)}">'
        '<button id="logout" type="submit">Sign out</button></form>'
    )


def tokens(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {
            "access_token": request.session.get("oidc_access_token"),
            "id_token": request.session.get("oidc_id_token"),
        }
    )


urlpatterns = [
    path("", home),
    path("tokens/", tokens),
    path("oidc/", include("mozilla_django_oidc.urls")),
]
