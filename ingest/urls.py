from django.urls import path

from ingest import views

urlpatterns = [
    path("events/", views.EventsView.as_view(), name="events"),
    path("batches/<int:batch_id>/", views.BatchDetailView.as_view(), name="batch-detail"),
    path("health/", views.HealthView.as_view(), name="health"),
]
