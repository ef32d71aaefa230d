from django.urls import path

from privacy import views

urlpatterns = [path("actors/forget/", views.ForgetActorView.as_view(), name="actors-forget")]
