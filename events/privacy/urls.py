from django.urls import path

from events.privacy import views

urlpatterns = [path("actors/forget/", views.ForgetActorView.as_view(), name="actors-forget")]
