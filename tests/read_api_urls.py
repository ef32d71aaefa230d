"""The project's URLs with `/api/events/` answering GET (reports.views.EventListView)
as well as POST, the way ingest/urls.py is to route it; for read API tests that
run before it does."""

from django.urls import include, path

from config.urls import handler404, handler500  # noqa: F401 (the error handlers of the root URLconf)
from ingest.views import PostEventsMixin
from reports.views import EventListView


class EventsEndpoint(PostEventsMixin, EventListView):
    pass


urlpatterns = [
    path("api/events/", EventsEndpoint.as_view()),
    path("", include("config.urls")),
]
