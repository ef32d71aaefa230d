"""`POST /api/actors/forget/`: erasure for staff who hold the permission (privacy.forget_actor)."""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import permissions, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from events.privacy.models import Erasure
from events.privacy.serializers import PERMISSION, ErasureSerializer, ForgetRequestSerializer
from events.privacy.services import ErasureRefused, forget_actor


class CanForget(permissions.BasePermission):
    """Active staff users holding the erasure permission, checked at every request (the analyst
    group is not needed: it is view-only); analysts and app keys get 403."""

    message = "Erasure needs an active staff user with the 'Can erase an actor's data' permission."

    def has_permission(self, request: Request, view: object) -> bool:
        user = request.user
        return isinstance(user, AbstractBaseUser) and user.is_active and user.is_staff and user.has_perm(PERMISSION)


class ForgetActorView(APIView):
    permission_classes = [CanForget]

    @extend_schema(
        operation_id="actors_forget",
        summary="Erase an actor's data (GDPR Art. 17)",
        description="Erases the actor's events, rejected records and records in stored request bodies (on one "
        "site, or everywhere) and recomputes the summaries it touched, which become what they would be had it "
        "never sent anything; with `suppress`, its future records are refused on every path. Runs to the end "
        "before answering (bounded transactions; a big actor takes a while: `manage.py forget_actor` does the "
        "same). The answer is the audit row, which says that an erasure happened, never whose.",
        request=ForgetRequestSerializer,
        responses={
            200: ErasureSerializer,
            400: OpenApiResponse(description='A bad request (JSON): `{"detail": "why"}` or per field.'),
            401: OpenApiResponse(description="No or wrong credentials (JSON error)."),
            403: OpenApiResponse(description="Not staff with the erasure permission, e.g. an analyst or app key."),
        },
        tags=["erasure"],
    )
    def post(self, request: Request) -> Response:
        given = ForgetRequestSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        try:
            erasure = forget_actor(
                data["actor"],
                site=data.get("site"),
                suppress=data["suppress"],
                reason=data["reason"],
                via=Erasure.Via.API,
                requested_by=request.user.get_username(),
            )
        except ErasureRefused as error:
            raise ValidationError({"detail": str(error)}) from None
        return Response(ErasureSerializer(erasure).data, status=status.HTTP_200_OK)
