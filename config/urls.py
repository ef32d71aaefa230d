from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.errors import json_not_found, json_server_error

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("ingest.urls")),
    path("api/", include("reports.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]

handler404 = json_not_found
handler500 = json_server_error
