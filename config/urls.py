from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.errors import json_not_found, json_server_error
from config.hostile import bound_date_hierarchies
from ingest.login_lockout import admin_password_change
from ingest.monitoring.views import metrics_view
from reports.admin_dashboard import dashboard_view

urlpatterns = [
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="switchboard-dashboard"),
    path("admin/password_change/", admin.site.admin_view(admin_password_change)),  # before the admin's own
    path("admin/", admin.site.urls),
    path("api/", include("ingest.urls")),
    path("api/", include("reports.urls")),
    path("api/", include("events.privacy.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("metrics", metrics_view, name="metrics"),
]

bound_date_hierarchies(admin.site)

handler404 = json_not_found
handler500 = json_server_error
